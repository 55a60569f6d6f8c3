"""Workload D: the NIST StRD nonlinear-regression suite, both starting points.

For each solver: per problem the first-call time (compilation for the JAX solvers),
the warm time of each start (median of `repeats`) and the log relative error (LRE) of
the parameters against the certified values (11 = all digits, < 4 counts as a miss).
"""

import statistics
import time

import numpy as np
from workloads import nist_problems

# Tight tolerances: the certified values have 11 significant digits.
NIST_TOL = 1e-12


def _fitters(name, tol):
    """``make(problem) -> fit(start) -> params`` for one solver."""
    import jax
    import jax.numpy as jnp

    if name.startswith("nlsq_fn"):
        import equinox as eqx

        import nlsq_fn as nf

        if "TRF" in name:
            strategy = nf.TRF()
        elif "Dogbox" in name:
            strategy = nf.Dogbox()
        else:
            strategy = nf.LevenbergMarquardt()
        # "(defaults)": factorization="auto"; "(tuned)": "normal", as on A, B, C.
        factorization = "normal" if "tuned" in name else "qr" if "(qr)" in name else "auto"
        solver = nf.Solver(
            strategy=strategy,
            factorization=factorization,
            ftol=tol,
            xtol=tol,
            gtol=tol,
            max_nfev=5000,
        )

        def make(problem):
            class Model(eqx.Module):
                def __call__(self, x, p):
                    return problem["model"](x, p)

            model = Model()

            @jax.jit
            def fit(x, y, p0):
                data = nf.Data(x, y)
                return nf.solve(model, data, nf.init(model, data, p0, solver)).x

            x, y = jnp.asarray(problem["x"]), jnp.asarray(problem["y"])
            return lambda start: jax.block_until_ready(fit(x, y, jnp.asarray(start)))

        return make

    if name == "SciPy":
        import scipy.optimize

        def make(problem):
            x, y, model = problem["x"], problem["y"], problem["model"]
            residual = jax.jit(lambda p: model(x, p) - y)
            jac = jax.jit(jax.jacfwd(lambda p: model(x, p) - y))
            return lambda start: (
                scipy.optimize.least_squares(
                    lambda p: np.asarray(residual(p)),
                    start,
                    jac=lambda p: np.asarray(jac(p)),
                    method="lm",
                    ftol=tol,
                    xtol=tol,
                    gtol=tol,
                    max_nfev=5000,
                ).x
            )

        return make

    if name == "Optimistix LM":
        import optimistix as optx

        solver = optx.LevenbergMarquardt(rtol=tol, atol=tol)

        def make(problem):
            model = problem["model"]

            @jax.jit
            def fit(x, y, p0):
                return optx.least_squares(
                    lambda p, args: model(args[0], p) - args[1],
                    solver,
                    p0,
                    args=(x, y),
                    max_steps=5000,
                    throw=False,
                ).value

            x, y = jnp.asarray(problem["x"]), jnp.asarray(problem["y"])
            return lambda start: jax.block_until_ready(fit(x, y, jnp.asarray(start)))

        return make

    if name == "JAXopt LM":
        import jaxopt

        def make(problem):
            model = problem["model"]
            solver = jaxopt.LevenbergMarquardt(
                lambda p, x, y: model(x, p) - y,
                maxiter=5000,
                stop_criterion="madsen-nielsen",
                xtol=tol,
                gtol=tol,
                tol=tol,
            )
            fit = jax.jit(lambda x, y, p0: solver.run(p0, x, y).params)
            x, y = jnp.asarray(problem["x"]), jnp.asarray(problem["y"])
            return lambda start: jax.block_until_ready(fit(x, y, jnp.asarray(start)))

        return make

    if name == "NLSQ":
        from nlsq import CurveFit

        fitter = CurveFit()

        def make(problem):
            model, n = problem["model"], problem["certified"].size

            def f(x, *p):
                return model(x, jnp.stack(p[:n]))

            return lambda start: np.asarray(
                fitter.curve_fit(
                    f,
                    problem["x"],
                    problem["y"],
                    p0=start,
                    ftol=tol,
                    xtol=tol,
                    gtol=tol,
                    max_nfev=5000,
                    full_output=True,
                )[0]
            )

        return make

    raise ValueError(f"No NIST runner for {name!r}.")


def run_nist(name, repeats, only=None, tol=NIST_TOL):
    problems, lre = nist_problems()
    if only is not None:
        problems = [p for p in problems if p["name"] in only]
    make = _fitters(name, tol)
    rows = []
    for problem in problems:
        fit = make(problem)
        for index, start in enumerate(problem["starts"]):
            started = time.perf_counter()
            try:
                params = fit(start)
                error = None
            except Exception as exc:  # a peer failing on a problem is a result too
                params, error = np.full(problem["certified"].shape, np.nan), repr(exc)[:200]
            first = time.perf_counter() - started
            warm = []
            for _ in range(repeats if error is None else 0):
                started = time.perf_counter()
                fit(start)
                warm.append(time.perf_counter() - started)
            params = np.asarray(params, float)
            rows.append(
                dict(
                    problem=problem["name"],
                    start=index + 1,
                    first_s=first,
                    warm_s=statistics.median(warm) if warm else float("nan"),
                    lre=lre(params, problem["certified"]) if np.all(np.isfinite(params)) else 0.0,
                    error=error,
                )
            )
    lres = [r["lre"] for r in rows]
    raised = sum(r["error"] is not None for r in rows)
    return dict(
        problems=rows,
        first_s=sum(r["first_s"] for r in rows),
        # A fit that raised has no time: the total is unknown, never a smaller sum.
        warm_s=None if raised else float(sum(r["warm_s"] for r in rows)),
        warm_s_completed=float(sum(r["warm_s"] for r in rows if r["error"] is None)),
        raised=raised,
        lre_median=float(np.median(lres)),
        lre_min=float(np.min(lres)),
        solved=int(sum(v >= 4 for v in lres)),
        fits=len(rows),
    )
