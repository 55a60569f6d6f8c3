"""SciPy's ``fun(x, *args, **kwargs)`` (and its `jac`) seen as nlsq_fn's
``model(x, params)``: what `least_squares` and `LeastSquares` fit."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._evaluation.operator_linearize import is_sparse
from .._evaluation.sparse_jacobian import dense_jacobian, jacobian_kind
from .._problem.host_model import traced_shape


class ResidualModel(eqx.Module):
    """``fun(params, *args, **kwargs)`` seen as a model ``model(arrays, params)`` with
    ``y = 0``: the array leaves of ``(args, kwargs)`` travel as data (new values reuse
    the compiled fit), everything else is passed to `fun` unchanged."""

    fun: Callable = eqx.field(static=True)
    rest: Any  # (args, kwargs) with the arrays taken out: static (hashed) leaves

    def __hash__(self):
        # (`kwargs` is a dict: hashed by its layout, equal models hash alike) so that
        # the checks' traces and a host-run `fun`'s values are found again in the fit.
        return hash((self.fun, jax.tree.structure(self.rest)))

    def __call__(self, arrays, params):
        args, kwargs = eqx.combine(arrays, self.rest)
        out = self.fun(params, *args, **kwargs)
        if jnp.ndim(out) > 1:  # SciPy's rule: a 2-D result is an error, not flattened
            raise ValueError(
                f"`fun` must return at most 1-d array_like. f0.shape: {jnp.shape(out)}"
            )
        return jnp.ravel(out)


def _is_float(value) -> bool:
    return isinstance(value, (float, np.floating))


def with_traced_floats(model: ResidualModel, arrays, x0) -> ResidualModel:
    """`model` with the floats among `args` / `kwargs` held as JAX scalars, so that a new
    value reuses the compiled fit instead of compiling another (a float is a static,
    hashed leaf otherwise). Only where `fun` traces with them: one that uses a float in
    Python (``if c > 0``, ``math.exp(c)``, ``range``) keeps the float it was given."""
    if not any(_is_float(leaf) for leaf in jax.tree.leaves(model.rest)):
        return model
    traced = eqx.tree_at(
        lambda m: m.rest,
        model,
        jax.tree.map(lambda v: jnp.asarray(v) if _is_float(v) else v, model.rest),
    )
    try:
        jax.eval_shape(traced, arrays, x0)
    except Exception:  # noqa: BLE001 - `fun` needs the float as a Python number
        return model
    return traced


class ResidualJacobian(eqx.Module):
    jac: Callable = eqx.field(static=True)
    rest: Any

    def __call__(self, arrays, params):
        args, kwargs = eqx.combine(arrays, self.rest)
        out = self.jac(params, *args, **kwargs)
        if is_sparse(out):  # a JAX `BCOO`: kept sparse (applied matrix-free by LSMR)
            return out
        if jacobian_kind(out) != "dense":  # on the host: a SciPy sparse matrix / operator
            return np.atleast_2d(dense_jacobian(out, jnp.size(params)))
        # SciPy takes a 1-D Jacobian as one row (np.atleast_2d): one residual.
        return jnp.atleast_2d(jnp.asarray(out))


def host_jacobian_kind(jac, jac_mode, arrays, x0, args, kwargs) -> str:
    """What a `jac` written with NumPy returns at `x0` ("sparse", "operator" or
    "dense"; one call on the host); for a JAX one "bcoo" (a JAX sparse matrix) or
    "dense"."""
    out, error = traced_shape(jac_mode, arrays, x0)
    if error is None:
        return "bcoo" if is_sparse(out) else "dense"
    try:
        value = jac(np.array(x0), *args, **kwargs)
    except Exception:  # noqa: BLE001 - `init` reports a failing `jac` with its own message
        return "dense"
    return jacobian_kind(value)
