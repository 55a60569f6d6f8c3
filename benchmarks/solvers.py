"""One runner per solver. Each fits a `Problem` and reports first-call time (tracing and
compilation included), warm time (median of `repeats` further calls, synchronised with
`block_until_ready`), iterations, final cost and the fitted parameters.

Every runner is called in a fresh process (see `run.py`), so first-call times include
compilation and peak memory belongs to that solver alone.
"""

import os
import statistics
import time

import numpy as np
from workloads import MODELS

# SciPy's default tolerances, used by every solver for workloads A, B, C and E.
TOL = 1e-8


def problem_dtype(problem):
    """float32 for workload E (Gpufit's precision), float64 otherwise; the environment
    variable ``NLSQ_FN_BENCH_DTYPE`` (``float32`` or ``float64``) overrides both."""
    import jax.numpy as jnp

    name = os.environ.get("NLSQ_FN_BENCH_DTYPE")
    if name:
        return jnp.dtype(name)
    return jnp.float32 if problem.workload == "E" else jnp.float64


def _timed(call, repeats):
    """First-call seconds, median warm seconds, and the last result."""
    start = time.perf_counter()
    result = call()
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm), warm, result


def _block(tree):
    import jax

    return jax.block_until_ready(tree)


def _report(first, warm, warm_all, params, iterations, cost, **extra):
    return dict(
        first_s=first,
        warm_s=warm,
        warm_all_s=warm_all,
        params=np.asarray(params, float).tolist(),
        iterations=np.asarray(iterations).tolist(),
        cost=np.asarray(cost, float).tolist(),
        **extra,
    )


def _time_peer_fit(fit, problem, repeats, dtype):
    """Jit `fit(x, y, p0) -> (params, steps, cost)` (vmapped over the datasets of a batch)
    and time it on the problem's data."""
    import jax
    import jax.numpy as jnp

    fit = jax.jit(jax.vmap(fit, in_axes=(None, 0, None)) if problem.batched else fit)
    x, y, p0 = (jnp.asarray(a, dtype) for a in (problem.x, problem.y, problem.p0))
    first, warm, warm_all, (params, steps, cost) = _timed(lambda: _block(fit(x, y, p0)), repeats)
    return _report(first, warm, warm_all, params, steps, cost)


def _cost_np(model_np, x, y, params):
    params = np.atleast_2d(params)
    y2 = np.atleast_2d(y)
    return [
        0.5 * float(np.sum((model_np(x, p) - yy) ** 2)) for p, yy in zip(params, y2, strict=True)
    ]


# ----- nlsq_fn -------------------------------------------------------------------------


def nlsq_fn_solver(strategy: str, m: int, tol: float, tuned: bool = False):
    """TRF or LM with SciPy's tolerances (nlsq_fn's defaults too) and otherwise nlsq_fn's
    defaults (`factorization="auto"`, `chunk_size="auto"`); or, `tuned`, the options
    set by hand: ``JᵀJ`` always (``factorization="normal"``; these problems are well
    conditioned) and chunks of 8,192 points above 16,384 points."""
    import nlsq_fn as nf

    options = dict(
        strategy=nf.TRF() if strategy == "trf" else nf.LevenbergMarquardt(),
        ftol=tol,
        xtol=tol,
        gtol=tol,
    )
    if tuned:
        options.update(factorization="normal", chunk_size=nlsq_fn_chunk_size(m), max_nfev=1000)
    return nf.Solver(**options)


def nlsq_fn_chunk_size(m: int) -> int | None:
    """Chunk only when the data are large; small fits (and batches of them) are cheapest
    in one shot."""
    return 8192 if m > 16384 else None


def run_nlsq_fn(problem, repeats, strategy="trf", tol=TOL, tuned=False):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    import nlsq_fn as nf

    model_jax = MODELS[problem.workload][0]

    class Model(eqx.Module):
        def __call__(self, x, p):
            return model_jax(x, p)

    model = Model()
    solver = nlsq_fn_solver(strategy, problem.size, tol, tuned)
    dtype = problem_dtype(problem)
    x = jnp.asarray(problem.x, dtype)
    y = jnp.asarray(problem.y, dtype)
    p0 = jnp.asarray(problem.p0, dtype)

    def fit(x, y, p0):
        data = nf.Data(x, y)
        solution = nf.solve(model, data, nf.init(model, data, p0, solver))
        return solution.x, solution.nfev, solution.cost, solution.nit

    fit = jax.jit(jax.vmap(fit, in_axes=(None, 0, None)) if problem.batched else fit)
    first, warm, warm_all, (params, nfev, cost, nit) = _timed(
        lambda: _block(fit(x, y, p0)), repeats
    )
    extra = {"nfev": np.asarray(nfev).tolist(), "peak_rss_mb": peak_rss_mb()}
    if not problem.batched:
        extra["fused_pass_s"] = _fused_pass_seconds(model, x, y, p0, solver)
    return _report(first, warm, warm_all, params, nit, cost, **extra)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _fused_pass_seconds(model, x, y, p0, solver):
    """One evaluation of the n-sized summary (residuals, JᵀJ or its factor, Jᵀf, cost)
    over all the data: the unit of work of one iteration. Measured after the peak memory
    of the fits was recorded: `init` outside `jit` checks the data and the model eagerly,
    which costs memory the timed fits do not use."""
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    import nlsq_fn as nf
    from nlsq_fn._drivers.linearize_at import linearization_at

    data = nf.Data(x, y)
    state = nf.init(model, data, p0, solver)
    _, unravel = ravel_pytree(state.params)
    passes = 10

    @jax.jit
    def evaluate(p):
        # Several passes in one call, so that dispatch overhead does not count; each
        # depends on the previous one, so none can be hoisted or merged.
        def one(_, total):
            lin = linearization_at(model, data, state, unravel, p + 0 * total)
            return total + lin.cost + lin.grad[0] + lin.factor[0, 0]

        return jax.lax.fori_loop(0, passes, one, jnp.zeros((), p.dtype))

    _, warm, _, _ = _timed(lambda: _block(evaluate(p0)), 5)
    return warm / passes


# ----- SciPy ---------------------------------------------------------------------------


def run_scipy(problem, repeats, tol=TOL):
    """`scipy.optimize.curve_fit` (MINPACK LM, its default without bounds) with the
    analytic Jacobian; a Python loop over the datasets of a batch."""
    import scipy.optimize

    _, model_np, jac_np = MODELS[problem.workload]

    def f(x, *p):
        return model_np(x, np.asarray(p))

    def jac(x, *p):
        return jac_np(x, np.asarray(p))

    def one(y):
        popt, _, info, _, _ = scipy.optimize.curve_fit(
            f,
            problem.x,
            y,
            p0=problem.p0,
            jac=jac,
            full_output=True,
            ftol=tol,
            xtol=tol,
            gtol=tol,
        )
        return popt, info["nfev"]

    def call():
        if problem.batched:
            out = [one(y) for y in problem.y]
            return np.stack([o[0] for o in out]), [o[1] for o in out]
        return one(problem.y)

    first, warm, warm_all, (params, nfev) = _timed(call, repeats)
    cost = _cost_np(model_np, problem.x, problem.y, params)
    return _report(first, warm, warm_all, params, nfev, cost)


# ----- Optimistix ----------------------------------------------------------------------


def run_optimistix(problem, repeats, tol=TOL):
    import jax.numpy as jnp
    import optimistix as optx

    model_jax = MODELS[problem.workload][0]
    dtype = problem_dtype(problem)

    def residual(p, args):
        x, y = args
        return model_jax(x, p) - y

    solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)

    def fit(x, y, p0):
        sol = optx.least_squares(residual, solver, p0, args=(x, y), max_steps=1000, throw=False)
        r = residual(sol.value, (x, y))
        return sol.value, sol.stats["num_steps"], 0.5 * jnp.sum(r**2)

    return _time_peer_fit(fit, problem, repeats, dtype)


# ----- JAXopt --------------------------------------------------------------------------


def run_jaxopt(problem, repeats, tol=TOL, defaults=False):
    """`jaxopt.LevenbergMarquardt` with Madsen–Nielsen stopping (relative step and
    gradient tests, like SciPy's) at the shared tolerance; or, with `defaults`, JAXopt's
    own defaults (gradient norm below 1e-3, at most 30 iterations: faster, looser)."""
    import jax.numpy as jnp
    import jaxopt

    model_jax = MODELS[problem.workload][0]
    dtype = problem_dtype(problem)

    def residual(p, x, y):
        return model_jax(x, p) - y

    if defaults:
        solver = jaxopt.LevenbergMarquardt(residual)
    else:
        solver = jaxopt.LevenbergMarquardt(
            residual,
            maxiter=1000,
            stop_criterion="madsen-nielsen",
            xtol=tol,
            gtol=tol,
            tol=tol,
            jit=True,
        )

    def fit(x, y, p0):
        out = solver.run(p0, x, y)
        r = residual(out.params, x, y)
        return out.params, out.state.iter_num, 0.5 * jnp.sum(r**2)

    return _time_peer_fit(fit, problem, repeats, dtype)


# ----- NLSQ ----------------------------------------------------------------------------


def run_nlsq(problem, repeats, tol=TOL, loop_limit=None):
    """NLSQ's `CurveFit`, one object reused for every call (so its compiled functions
    are reused); a Python loop over the datasets of a batch (the first `loop_limit`
    of them, the time then scaled to the whole batch)."""
    import jax.numpy as jnp
    from nlsq import CurveFit

    model_jax = MODELS[problem.workload][0]
    n = problem.p0.size

    def f(x, *p):
        return model_jax(x, jnp.stack(p[:n]))

    fitter = CurveFit()
    ys = problem.y if problem.batched else problem.y[None]
    if loop_limit is not None:
        ys = ys[:loop_limit]

    def one(y):
        popt, _, info, _, _ = fitter.curve_fit(
            f, problem.x, y, p0=problem.p0, full_output=True, ftol=tol, xtol=tol, gtol=tol
        )
        return np.asarray(popt), int(np.asarray(info.get("nfev", -1)))

    def call():
        out = [one(y) for y in ys]
        return np.stack([o[0] for o in out]), [o[1] for o in out]

    first, warm, warm_all, (params, nfev) = _timed(call, repeats)
    scale = len(problem.y) / len(ys) if problem.batched else 1.0
    if not problem.batched:
        params, nfev = params[0], nfev[0]
    fitted = ys if problem.batched else problem.y
    cost = _cost_np(MODELS[problem.workload][1], problem.x, fitted, params)
    return _report(
        first,
        warm * scale,
        [w * scale for w in warm_all],
        params,
        nfev,
        cost,
        datasets_timed=len(ys),
        time_scaled_by=scale,
    )


def run_curve_fit_batch(problem, repeats, method):
    """A batch as a user fits it by default: `nf.curve_fit_batch` (the compacted working
    batch: finished members stop costing), on concrete arrays."""
    import jax.numpy as jnp

    import nlsq_fn as nf

    if not problem.batched:
        raise ValueError("curve_fit_batch fits batches only")
    model_jax = MODELS[problem.workload][0]
    dtype = problem_dtype(problem)
    x = np.asarray(problem.x, dtype)
    y = np.asarray(problem.y, dtype)
    p0 = np.asarray(problem.p0, dtype)

    def model(x, *p):
        return model_jax(x, jnp.stack(p))

    first, warm, warm_all, (popt, _, solution) = _timed(
        lambda: _block(nf.curve_fit_batch(model, x, y, p0, method=method, progress=False)),
        repeats,
    )
    return _report(first, warm, warm_all, popt, solution.nit, solution.cost)


def _nlsq_fn_runner(strategy, tuned):
    return lambda problem, repeats, **kw: run_nlsq_fn(problem, repeats, strategy, tuned=tuned, **kw)


RUNNERS = {
    "nlsq_fn TRF (defaults)": _nlsq_fn_runner("trf", tuned=False),
    "nlsq_fn LM (defaults)": _nlsq_fn_runner("lm", tuned=False),
    "nlsq_fn TRF (tuned)": _nlsq_fn_runner("trf", tuned=True),
    "nlsq_fn LM (tuned)": _nlsq_fn_runner("lm", tuned=True),
    "nlsq_fn TRF (curve_fit_batch)": lambda problem, repeats: run_curve_fit_batch(
        problem, repeats, "trf"
    ),
    "nlsq_fn LM (curve_fit_batch)": lambda problem, repeats: run_curve_fit_batch(
        problem, repeats, "lm"
    ),
    "SciPy": run_scipy,
    "Optimistix LM": run_optimistix,
    "JAXopt LM": run_jaxopt,
    "JAXopt LM (defaults)": lambda problem, repeats: run_jaxopt(problem, repeats, defaults=True),
    "NLSQ": run_nlsq,
}
