"""`init`'s probes of the user's functions: the model's output (shape, dtype) and a
`jac`'s, each traced by JAX or, for one written with NumPy, run once on the host at the
fit's start (`traced_or_on_host`, the rule every front end uses)."""

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._evaluation.sparse_jacobian import as_jacobian
from .._misc import is_concrete
from .._problem.data import Data
from .._problem.host_model import HostModel, call_on_host, traced_or_on_host, warn_host_model


def jacobian_function(jac: Callable, data: Data, params, start: Callable) -> Callable:
    """The user's `jac`, checked to return ``(m, n)`` (or ``y.shape + (n,)``): a
    transposed Jacobian must never be reshaped into a wrong one. A `jac` written with
    NumPy (which JAX cannot trace) is run on the host, at `start()`."""
    n = ravel_pytree(params)[0].size
    expected = (int(np.prod(data.y.shape)), n)
    out, on_host = traced_or_on_host(
        lambda x, p: as_jacobian(jac(x, p)),
        data.x,
        params,
        lambda: call_on_host(jac, data.model_x, start()),
        lambda error, _: ValueError(f"Calling `jac` at p0 failed: {error}"),
        concrete=is_concrete(data, params),
    )
    if on_host:
        warn_host_model()
        jac = HostModel(jac, out.shape)
    if out.shape not in (expected, (*data.y.shape, n)):
        raise ValueError(
            f"The return value of `jac` has wrong shape: expected {expected}, actual {out.shape}."
        )
    return jac


def check_model(model: Callable, data: Data, params, start: Callable):
    """Check the model's output shape and dtype (abstractly, with `params` for their
    shapes); ``(True, its values at start())`` if it has to run on the host, else
    ``(False, None)``."""
    out, on_host = traced_or_on_host(
        model,
        data.x,
        params,
        lambda: call_on_host(model, data.model_x, start()),
        lambda error, _: ValueError(f"Calling the model as model(x, params) at p0 failed: {error}"),
        concrete=is_concrete(data, params),
    )
    shape = getattr(out, "shape", None)
    if shape is None:
        raise ValueError(f"The model must return one array; it returned {type(out).__name__}.")
    if shape != data.y.shape:
        raise ValueError(
            f"The model returns shape {shape} but `y` has shape {data.y.shape}; they must match."
        )
    if on_host:
        warn_host_model()
    if not jnp.issubdtype(out.dtype, jnp.inexact):
        # Silently casting would fit nothing: the derivatives of integers are zero.
        raise ValueError(
            f"The model returns {out.dtype} values; it must return floating-point values "
            "(the derivatives of integer values are zero, so nothing could be fitted)."
        )
    if jnp.issubdtype(out.dtype, jnp.complexfloating):
        raise ValueError("The model returns complex values; they must be real.")
    return on_host, (out if on_host else None)
