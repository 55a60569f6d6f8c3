"""The model at flat parameters, as a strategy sees it: weighted residuals and their
Jacobian (autodiff, a `jac` function, finite differences, grouped columns of a sparse
pattern), reduced to the ``n``-sized summary in one shot, chunk by chunk or matrix-free;
and the `Problem` a strategy knows. Every driver (`solve`, the step-by-step fit, batches,
streams, global fits) evaluates through these."""

from collections.abc import Callable

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._evaluation.finite_difference import FINITE_DIFFERENCE_METHODS, finite_difference_jacobian
from .._evaluation.linearize import (
    Linearization,
    chunked_linearize,
    linearize,
    residual_and_jacobian,
)
from .._evaluation.operator_linearize import (
    OperatorLinearization,
    autodiff_linearization,
    is_sparse,
    matrix_linearization,
)
from .._evaluation.sparse_jacobian import GroupedDifferences, as_jacobian
from .._problem.data import Data
from .._strategies.strategy import Problem


def residual_function(
    model: Callable, data: Data, unravel: Callable
) -> Callable[[Float[Array, " n"]], Float[Array, " m"]]:
    """Flat parameters -> weighted, masked, flattened residuals."""
    return lambda x: data.weighted_residual(model(data.model_x, unravel(x)))


def residual_and_jac(model, data, state, unravel, x, sparse: bool = False):
    """Weighted residuals and their Jacobian at flat parameters `x` (with a sparsity
    pattern and `sparse`, as a `BCOO` matrix: for the matrix-free strategies)."""

    def residual_of(params):  # weighted, masked, flattened
        return data.weighted_residual(model(data.model_x, params))

    if isinstance(state.jac, GroupedDifferences):  # column groups of a known pattern
        f, values = state.jac.residual_and_values(
            residual_of, x, unravel, state.diff_step, state.lower, state.upper, state.bounded
        )
        as_matrix = state.jac.sparse if sparse else state.jac.dense
        return f, as_matrix(values, f.size, x.size)
    if callable(state.jac):
        params = unravel(x)
        f = residual_of(params)
        jac = as_jacobian(state.jac(data.model_x, params))
        n = x.size
        if jac.shape not in ((f.size, n), (*data.y.shape, n)):  # static: checked once
            raise ValueError(
                "The return value of `jac` has wrong shape: expected "
                f"{(f.size, n)}, actual {jac.shape}."
            )
        if is_sparse(jac):  # a `BCOO` from the user's `jac`: rows scaled, kept sparse
            return f, _scaled_rows(jac, data, f.size, n, f.dtype, sparse)
        jac = jnp.reshape(jnp.asarray(jac, f.dtype), (f.size, n))
        if data.sigma is not None:
            sigma = jnp.broadcast_to(data.sigma, data.y.shape)
            if data.mask is not None:
                sigma = jnp.where(data.mask, sigma, 1.0)
            jac = jac / sigma.ravel()[:, None]
        if data.mask is not None:
            jac = jnp.where(data.mask.ravel()[:, None], jac, 0.0)
        return f, jac
    if state.jac in FINITE_DIFFERENCE_METHODS:
        f = residual_of(unravel(x))
        jac = finite_difference_jacobian(
            residual_of,
            x,
            unravel,
            f,
            state.jac,
            state.diff_step,
            state.lower,
            state.upper,
            state.bounded,
        )
        return f, jac
    return residual_and_jacobian(residual_function(model, data, unravel), x, state.jac)


def _scaled_rows(jac, data, m, n, dtype, sparse):
    """A sparse Jacobian's rows divided by `sigma` and zero where masked (as the dense
    one's), as a `BCOO` or, when not `sparse`, the dense matrix."""
    from jax.experimental.sparse import BCOO  # (imported where used: a third of a second)

    if jac.shape != (m, n):
        jac = jac.reshape((m, n))
    scale = jnp.ones((m,), dtype)
    if data.sigma is not None:
        scale = 1 / jnp.broadcast_to(data.sigma, data.y.shape).ravel()
    if data.mask is not None:
        scale = jnp.where(data.mask.ravel(), scale, 0.0)
    jac = BCOO((jac.data.astype(dtype) * scale[jac.indices[:, 0]], jac.indices), shape=(m, n))
    return jac if sparse else jac.todense()


def is_matrix_free(state) -> bool:
    """Whether the strategy works with the Jacobian as an operator (`TRFLSMR`)."""
    return getattr(state.strategy, "matrix_free", False)


def uses_jvps(state) -> bool:
    """Whether a matrix-free fit applies the Jacobian as JVPs / VJPs of the model (JAX's
    derivatives, `x_scale` given): it never forms the Jacobian then."""
    return is_matrix_free(state) and state.jac in ("fwd", "rev") and state.x_scale is not None


def operator_linearization_at(model, data, state, unravel, x) -> OperatorLinearization:
    """The matrix-free strategy's summary at `x`: with JAX's derivatives one VJP (no
    Jacobian); with a given Jacobian (a function, finite differences) that matrix, as
    with ``x_scale="jac"`` (which needs the column norms: autodiff forms it then)."""
    if uses_jvps(state):
        return autodiff_linearization(residual_function(model, data, unravel), x, state.loss)
    f, jac = residual_and_jac(model, data, state, unravel, x, sparse=True)
    return matrix_linearization(f, jac, state.loss)


def linearization_at(model, data, state, unravel, x) -> Linearization | OperatorLinearization:
    """The ``n``-sized summary at flat parameters `x`: in one shot, or chunk by chunk
    (never holding the whole Jacobian) when `state.chunk_size` is set."""
    if is_matrix_free(state):
        return operator_linearization_at(model, data, state, unravel, x)
    if state.chunk_size is None:
        f, jac = residual_and_jac(model, data, state, unravel, x)
        return linearize(f, jac, state.loss, state.factorization)
    return chunked_linearize(
        lambda chunk: residual_and_jac(model, chunk, state, unravel, x),
        data,
        x.size,
        state.chunk_size,
        state.loss,
        state.factorization,
    )


def problem_for(data, state, residual=None):
    return problem_of(state, data.n_points, residual)


def problem_of(state, n_rows, residual=None) -> Problem:
    """What a strategy knows of the problem: `state`'s bounds, scaling and tolerances,
    and the number of residuals `n_rows` (of a data set, or of all a stream's passes)."""
    return Problem(
        lower=state.lower,
        upper=state.upper,
        x_scale=state.x_scale,
        ftol=state.ftol,
        xtol=state.xtol,
        gtol=state.gtol,
        n_rows=n_rows,
        bounded=state.bounded,
        residual=residual,
    )
