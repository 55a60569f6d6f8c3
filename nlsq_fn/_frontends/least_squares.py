"""``least_squares``: SciPy's interface, as a thin layer over `init` and `solve`."""

from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._drivers.options import has_finite_bounds, strategy_for
from .._drivers.progress import print_final_report
from .._drivers.solve import solve, with_jacobian
from .._drivers.solver import JacobianMode, Solver, init
from .._drivers.start import check_real_start, strictly_inside
from .._drivers.stepwise import solve_stepwise_while_cheaper
from .._evaluation.compiled import compiled, limit_programs
from .._evaluation.finite_difference import FINITE_DIFFERENCE_METHODS
from .._evaluation.operator_linearize import host_jacobian_operator
from .._evaluation.sparse_jacobian import (
    GroupedDifferences,
    check_jac_sparsity,
    host_matrix,
    structured_like,
)
from .._misc import ArrayLikeOrSequence, is_concrete, warn_user
from .._problem.arguments import as_bounds, as_count, as_real, as_verbose
from .._problem.data import Data
from .._problem.host_errors import reraise_host_errors
from .._problem.host_model import (
    call_on_host,
    reusing_evaluations,
    shape_is_known,
    traced_or_on_host,
)
from .._problem.loss import AbstractLoss, Linear, as_loss
from .._results.optimize_result import OptimizeResult
from .._results.solution import Solution
from .._strategies.lsmr_dogbox import DogboxLSMR
from .._strategies.lsmr_trf import TRFLSMR, lsmr_options, lsmr_strategy
from .._strategies.trust_region import STATUS_MESSAGES, STOPPED
from .residual_model import ResidualJacobian, ResidualModel, host_jacobian_kind, with_traced_floats
from .scipy_compat import as_core_callback, check_tolerances, finite_difference_options


@compiled
def _solve(model, data, state):
    # SciPy returns the Jacobian at the solution: filled in when the fit ran in chunks.
    return with_jacobian(model, data, state, solve(model, data, state))


def _with_tr_solver(strategy, method: str, tr_solver, tr_options):
    """The strategy for SciPy's `tr_solver` (`tr_options` apply to 'lsmr' only, as in
    SciPy; 'lm' has no trust-region solver to choose)."""
    if tr_solver != "lsmr" or method == "lm":
        return strategy
    if method == "dogbox":
        options = lsmr_options(tr_options)
        if "regularize" in options:
            warn_user(
                "The keyword 'regularize' in `tr_options` is not relevant for 'dogbox' method."
            )
            del options["regularize"]
        return DogboxLSMR(**options)
    return lsmr_strategy(tr_options)


# SciPy reports a stop by the callback as -2 (nlsq_fn's core uses -2 for "running").
_SCIPY_STOPPED = -2
_SCIPY_MESSAGES = {
    **STATUS_MESSAGES,
    _SCIPY_STOPPED: "Stopped because `callback` function raised `StopIteration` or returned `True`",
}
# From this many parameters `tr_solver=None` means 'lsmr' (SciPy: 'exact' for a dense
# Jacobian, whose SVD would take minutes and m x n x 8 bytes there).
LSMR_FROM_N = 5000
_JACOBIAN_NAMES = ("fwd", "rev", "2-point", "3-point", "cs")


@reraise_host_errors
def least_squares(
    fun: Callable,
    x0: ArrayLikeOrSequence,
    jac: Callable | str | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str = "trf",
    ftol: float | None = 1e-8,
    xtol: float | None = 1e-8,
    gtol: float | None = 1e-8,
    x_scale: ArrayLikeOrSequence | str | None = None,
    loss: str | Callable | AbstractLoss = "linear",
    f_scale: float = 1.0,
    diff_step: ArrayLikeOrSequence | None = None,
    tr_solver: str | None = None,
    tr_options: dict | None = None,
    jac_sparsity: Any = None,
    max_nfev: int | None = None,
    verbose: int = 0,
    args: tuple = (),
    kwargs: dict | None = None,
    callback: Callable | None = None,
    workers: Any = None,
) -> "OptimizeResult | Solution":
    """Minimise ``0.5 * sum(rho(fun(x, *args, **kwargs)**2))``, as
    `scipy.optimize.least_squares`.

    Same arguments and meaning as SciPy: ``method`` ``"trf"``, ``"dogbox"`` or ``"lm"``;
    ``jac`` a callable ``jac(x, *args, **kwargs) -> (m, n)``, None / ``"fwd"`` / ``"rev"``
    for JAX's exact Jacobian (the default), or SciPy's finite differences ``"2-point"``,
    ``"3-point"``, ``"cs"`` with its `diff_step`; ``loss`` a name, an `AbstractLoss` or
    SciPy's callable ``rho(z) -> (3, m)``; ``bounds`` a pair or a
    `scipy.optimize.Bounds`; a tolerance of None disables its criterion. `fun` must be
    written with `jax.numpy` (or runs on the host, at SciPy's speed). ``verbose=2``
    prints SciPy's iteration table from inside the compiled loop and ``verbose=1`` its
    closing report.

    ``callback(intermediate_result)`` (an `OptimizeResult` with ``x``, ``cost``,
    ``nit``, ``grad``) or ``callback(x)`` is called after each iteration and stops the
    fit by raising `StopIteration` (status -2), as in SciPy 1.16+; nlsq_fn's
    ``callback(iteration, x, cost, grad)`` may also stop it by returning True.
    ``tr_solver="lsmr"`` (the default from 5000 parameters) solves the trust-region
    subproblem with LSMR, matrix-free with JAX's derivatives (`TRFLSMR`, `DogboxLSMR`;
    `tr_options` as SciPy's); a NumPy
    `jac` returning a SciPy sparse matrix or `LinearOperator`, a JAX `jac` returning a
    `BCOO` matrix, or `jac_sparsity` selects it as SciPy does. With `jac_sparsity` the
    Jacobian is found over groups of columns that share no row: by one JVP per group
    (JAX's derivatives, exact) or SciPy's finite differences, and kept sparse. `workers`
    is accepted for SciPy compatibility and has no effect. A NumPy `fun` is called once
    at a point, and ``nfev`` counts its calls as SciPy's test of it does: the call of
    JAX's trace that found it needs the host is one (SciPy's ``nfev`` + 1).

    Called eagerly, returns an `OptimizeResult` of NumPy values with SciPy's fields
    (``x``, ``cost``, ``fun``, ``jac``, ``grad``, ``optimality``, ``active_mask``,
    ``nfev``, ``njev``, ``status``, ``message``, ``success``) plus ``nit`` and
    ``initial_cost``. Under `jax.jit`, `jax.vmap` or `jax.grad` (traced `x0` or
    `args`) it returns the `Solution` pytree of JAX arrays instead.
    """
    del workers  # SciPy's parallel finite differences: JAX batches them itself
    if tr_solver not in (None, "exact", "lsmr"):
        raise ValueError("`tr_solver` must be None, 'exact' or 'lsmr'.")
    if jac_sparsity is not None:
        if method == "lm":
            raise ValueError("method='lm' does not support `jac_sparsity`.")
        if tr_solver == "exact":
            raise ValueError("tr_solver='exact' is incompatible with `jac_sparsity`.")
    if not callable(fun):
        raise TypeError(f"`fun` must be callable, got {type(fun).__name__}.")
    if method not in ("trf", "lm", "dogbox"):
        raise ValueError("`method` must be 'trf', 'dogbox' or 'lm'.")
    verbose = as_verbose(verbose)
    ftol, xtol, gtol = (
        None if tol is None else as_real(tol, name)
        for tol, name in ((ftol, "ftol"), (xtol, "xtol"), (gtol, "gtol"))
    )
    f_scale = as_real(f_scale, "f_scale")
    max_nfev = as_count(max_nfev, "max_nfev")
    if max_nfev is not None and max_nfev <= 0:
        raise ValueError("`max_nfev` must be None or positive integer.")
    bounds = as_bounds(bounds)
    if kwargs is None:
        kwargs = {}
    if not isinstance(args, tuple):
        args = tuple(args) if isinstance(args, list) else (args,)
    x0 = jnp.asarray(x0)
    check_real_start(x0.dtype, "x0")
    if x0.ndim > 1:
        raise ValueError("`x0` must have at most 1 dimension.")
    x0 = jnp.atleast_1d(x0)
    if not jnp.issubdtype(x0.dtype, jnp.inexact):
        x0 = x0.astype(jnp.result_type(float))
    bounded = has_finite_bounds(bounds)
    strategy = strategy_for(method, bounded)
    loss_module = as_loss(loss, f_scale)
    if method == "lm" and not isinstance(loss_module, Linear):
        raise ValueError("method='lm' supports only 'linear' loss function.")
    if x_scale is not None and not isinstance(x_scale, str) and np.iscomplexobj(x_scale):
        raise ValueError("`x_scale` must be 'jac' or array_like with positive numbers.")
    ftol, xtol, gtol = check_tolerances(ftol, xtol, gtol, method)
    if method == "lm" and callback is not None:
        warn_user("Callback function specified, but not supported with `lm` method.")
        callback = None
    arrays, rest = eqx.partition((args, kwargs), eqx.is_array)
    model = ResidualModel(fun, rest)
    # A host-run `fun` is called once at a point (its first value is the probe's below).
    with reusing_evaluations(model):
        # A trace is a call of `fun`: one that fails (NumPy) is counted in `nfev` below.
        traced_calls = 0 if shape_is_known(model, arrays, x0) else 1
        # A NumPy `fun` (`init` runs it on the host) is called at the fit's start, as
        # SciPy's: this value is the fit's first evaluation.
        out, on_host = traced_or_on_host(
            model,
            arrays,
            x0,
            lambda: call_on_host(model, arrays, _start(strategy, x0, bounds, bounded)),
            _fun_failed,
        )
        if not on_host and not (isinstance(jac, str) and jac == "cs"):
            # (Complex steps call `fun` with complex parameters, which the fit's closure
            # conversion of a traced float would refuse: those floats stay Python numbers.)
            model = with_traced_floats(model, arrays, x0)
        m = int(np.prod(out.shape))
        if method == "lm" and m < x0.size:
            raise ValueError(
                "Method 'lm' doesn't work when the number of residuals is less than the "
                "number of variables."
            )
        jac_kind = "dense"
        if callable(jac):
            jac_mode: JacobianMode = ResidualJacobian(jac, rest)
            jac_kind = host_jacobian_kind(jac, jac_mode, arrays, x0, args, kwargs)
        elif jac is None or jac in _JACOBIAN_NAMES:
            jac_mode = cast(JacobianMode, jac or "fwd")
        else:
            raise ValueError(
                f"`jac` must be a callable, None, 'fwd', 'rev', '2-point', '3-point' or 'cs', "
                f"got {jac!r}."
            )
        if jac_kind != "dense":
            if method == "lm":
                raise ValueError("method='lm' works only with dense Jacobian matrices.")
            if tr_solver == "exact":
                raise ValueError("tr_solver='exact' works only with dense Jacobian matrices.")
            if jac_kind == "operator" and isinstance(x_scale, str) and x_scale == "jac":
                raise ValueError("x_scale='jac' can't be used when `jac` returns LinearOperator.")
            tr_solver = "lsmr"
        if jac_sparsity is not None:
            pattern = check_jac_sparsity(jac_sparsity, m, x0.size)
            tr_solver = "lsmr"
            if jac_mode == "fwd" and on_host:
                jac_mode = "2-point"  # a NumPy `fun`: SciPy's default, over the groups
            if isinstance(jac_mode, str) and jac_mode in (*FINITE_DIFFERENCE_METHODS, "fwd"):
                # JAX's Jacobian by compressed JVPs: one per group of columns.
                jac_mode = GroupedDifferences.from_pattern(jac_mode, pattern)
                jac_kind = "sparse"
            # (A `jac` function gives the Jacobian itself, as in SciPy for a callable
            # `jac`; ``jac="rev"`` applies JAX's derivatives as JVPs / VJPs, no pattern.)
        if tr_solver is None and x0.size >= LSMR_FROM_N:
            tr_solver = "lsmr"  # the dense step needs an n x n SVD and the m x n Jacobian
        strategy = _with_tr_solver(strategy, method, tr_solver, tr_options)
        solver_options = finite_difference_options(diff_step)
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
            verbose=2 if verbose == 2 else 0,
            callback=as_core_callback(callback),
            **solver_options,
        )
        data = Data(x=arrays, y=jnp.zeros((m,), out.dtype))
        state = init(model, data, x0, solver)
        limit_programs()
        solution = solve_stepwise_while_cheaper(fun, model, data, state)
        solution = solution or _solve(model, data, state)
        if not is_concrete(solution):
            return solution
        if verbose >= 1:
            print_final_report(solution)
        result = as_optimize_result(solution)
        if solution.jac is None and isinstance(strategy, (TRFLSMR, DogboxLSMR)):
            # Never formed: SciPy's operator instead (JVPs / VJPs at the solution).
            result["jac"] = host_jacobian_operator(
                lambda p: model(arrays, p), jnp.asarray(result["x"]), loss_module
            )
        if jac_kind in ("sparse", "operator"):  # SciPy's type back
            result["jac"] = structured_like(jac_kind, result["jac"])
        if method == "lm":
            result["njev"] = None  # as SciPy, whose MINPACK does not count them
        if state.host_model:
            # SciPy's `nfev` counts the calls of `fun`: JAX's failed trace was one.
            result["nfev"] += traced_calls
        return result


def _fun_failed(tracing_error, host_error):
    """The error of a `fun` that fails on the host too: wrong arguments keep SciPy's
    error type."""
    if isinstance(host_error, TypeError):
        return TypeError(f"Calling fun(x0, *args, **kwargs) failed: {host_error}")
    return ValueError(f"Calling fun(x0, *args, **kwargs) failed: {tracing_error}")


def _start(strategy, x0, bounds, bounded: bool):
    """Where the fit evaluates `fun` first: SciPy's trf moves `x0` strictly inside the
    bounds before it does (`init` reports bounds that do not fit `x0`)."""
    if not bounded:
        return x0
    try:
        lower, upper = (jnp.broadcast_to(jnp.asarray(b, x0.dtype), x0.shape) for b in bounds)
    except (TypeError, ValueError):
        return x0
    return strictly_inside(strategy, x0, lower, upper)


def as_optimize_result(solution: Solution) -> OptimizeResult:
    """SciPy's result from a concrete `Solution`: NumPy arrays and Python scalars."""
    status = int(solution.status)
    if status == STOPPED:
        status = _SCIPY_STOPPED
    result = OptimizeResult(
        x=np.asarray(solution.x),
        cost=float(solution.cost),
        fun=np.asarray(solution.fun),
        jac=None if solution.jac is None else host_matrix(solution.jac),
        grad=np.asarray(solution.grad),
        optimality=float(solution.optimality),
        active_mask=np.asarray(solution.active_mask),
        nfev=int(solution.nfev),
        njev=int(solution.njev),
        status=status,
        message=_SCIPY_MESSAGES[status],
        success=status > 0,
    )
    result["nit"] = int(solution.nit)
    result["initial_cost"] = float(solution.initial_cost)
    return result
