"""``least_squares``: SciPy's interface, as a thin layer over `init` and `solve`."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._arguments import as_bounds, as_count, as_real, as_verbose
from ._data import Data
from ._dogbox import Dogbox
from ._host_model import call_on_host
from ._levenberg_marquardt import LevenbergMarquardt
from ._loss import AbstractLoss, Linear, as_loss
from ._misc import ArrayLikeOrSequence
from ._progress import print_final_report
from ._result import Solution
from ._solve import solve, with_jacobian
from ._solver import Solver, init
from ._trf import TRF


@eqx.filter_jit
def _solve(model, data, state):
    # SciPy returns the Jacobian at the solution: filled in when the fit ran in chunks.
    return with_jacobian(model, data, state, solve(model, data, state))


class _ResidualModel(eqx.Module):
    """``fun(params, *args)`` seen as a model ``model(args, params)`` with ``y = 0``."""

    fun: Callable = eqx.field(static=True)

    def __call__(self, args, params):
        return jnp.ravel(self.fun(params, *args))


class _ResidualJacobian(eqx.Module):
    jac: Callable = eqx.field(static=True)

    def __call__(self, args, params):
        return self.jac(params, *args)


def strategy_for(method: str, has_bounds: bool):
    """The strategy SciPy's ``method`` names."""
    if method == "trf":
        return TRF()
    if method == "dogbox":
        return Dogbox()
    if method == "lm":
        if has_bounds:
            raise ValueError("Method 'lm' doesn't support bounds.")
        return LevenbergMarquardt()
    raise ValueError(f"`method` must be 'trf', 'dogbox' or 'lm', got {method!r}.")


def has_finite_bounds(bounds) -> bool:
    return any(
        np.any(np.isfinite(np.asarray(b, dtype=float))) for b in jax.tree.leaves(bounds)
    )


def least_squares(
    fun: Callable,
    x0: ArrayLikeOrSequence,
    jac: Callable | str | None = None,
    bounds: tuple[Any, Any] = (-np.inf, np.inf),
    method: str = "trf",
    ftol: float = 1e-8,
    xtol: float = 1e-8,
    gtol: float = 1e-8,
    x_scale: ArrayLikeOrSequence | str | None = None,
    loss: str | AbstractLoss = "linear",
    f_scale: float = 1.0,
    diff_step: ArrayLikeOrSequence | None = None,
    max_nfev: int | None = None,
    args: tuple = (),
    verbose: int = 0,
    callback: Callable | None = None,
) -> Solution:
    """Minimise ``0.5 * sum(rho(fun(x, *args)**2))``, as `scipy.optimize.least_squares`.

    Same arguments and meaning as SciPy (``method`` is ``"trf"``, ``"dogbox"`` or
    ``"lm"``; ``jac`` a callable ``jac(x, *args) -> (m, n)``, None / ``"fwd"`` / ``"rev"``
    for JAX's exact Jacobian (the default), or SciPy's finite differences ``"2-point"``,
    ``"3-point"``, ``"cs"`` with its `diff_step`). `fun` must be written with `jax.numpy`.
    ``verbose=2`` prints SciPy's iteration table from inside the compiled loop and
    ``verbose=1`` its closing report; ``callback(iteration, x, cost, grad)`` is called after
    each iteration and stops the fit (status -3) by returning True.
    Returns a `Solution` with SciPy's fields (``x``, ``cost``, ``fun``, ``jac``,
    ``grad``, ``optimality``, ``active_mask``, ``nfev``, ``njev``, ``status``,
    ``message``, ``success``) plus ``nit`` and ``initial_cost``.
    """
    verbose = as_verbose(verbose)
    ftol, xtol, gtol = as_real(ftol, "ftol"), as_real(xtol, "xtol"), as_real(gtol, "gtol")
    f_scale = as_real(f_scale, "f_scale")
    max_nfev = as_count(max_nfev, "max_nfev")
    bounds = as_bounds(bounds)
    args = tuple(args)
    x0 = jnp.asarray(x0)
    if jnp.iscomplexobj(x0):
        raise ValueError("`x0` must be real numbers, got complex values.")
    if x0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    x0 = jnp.atleast_1d(x0)
    if not jnp.issubdtype(x0.dtype, jnp.inexact):
        x0 = x0.astype(jnp.result_type(float))
    bounded = has_finite_bounds(bounds)
    strategy = strategy_for(method, bounded)
    loss_module = as_loss(loss, f_scale)
    if method == "lm" and not isinstance(loss_module, Linear):
        raise ValueError("method='lm' supports only the 'linear' loss.")
    model = _ResidualModel(fun)
    try:
        out = jax.eval_shape(model, args, x0)
    except Exception as error:
        try:
            out = call_on_host(model, args, x0)  # a NumPy `fun`: `init` runs it on the host
        except Exception:
            raise ValueError(f"Calling fun(x0, *args) failed: {error}") from error
    m = int(np.prod(out.shape))
    if method == "lm" and m < x0.size:
        raise ValueError(
            "Method 'lm' doesn't work when the number of residuals is less than the "
            "number of variables."
        )
    if callable(jac):
        jac_mode = _ResidualJacobian(jac)
    elif jac in (None, "fwd", "rev", "2-point", "3-point", "cs"):
        jac_mode = jac or "fwd"
    else:
        raise ValueError(
            f"`jac` must be a callable, None, 'fwd', 'rev', '2-point', '3-point' or 'cs', "
            f"got {jac!r}."
        )
    solver = Solver(
        strategy=strategy,
        loss=loss_module,
        bounds=bounds if bounded else None,
        x_scale=x_scale,
        ftol=ftol,
        xtol=xtol,
        gtol=gtol,
        max_nfev=max_nfev,
        jac=jac_mode,
        diff_step=diff_step,
        verbose=2 if verbose == 2 else 0,
        callback=callback,
    )
    data = Data(x=tuple(jnp.asarray(a) for a in args), y=jnp.zeros((m,), out.dtype))
    state = init(model, data, x0, solver)
    solution = _solve(model, data, state)
    if verbose >= 1:
        print_final_report(solution)
    return solution
