"""Many parameters: SciPy's Broyden tridiagonal problem (its test_least_squares.py) with
n = 10⁴ and 10⁵ parameters (and as many residuals), or a smoothing spline (``--problem
spline``: a log-intensity cubic B-spline with n coefficients fitted to 3n points, with a
second-difference penalty). nlsq_fn's ``least_squares`` with a JAX model, matrix-free
(``tr_solver="lsmr"``: the Jacobian applied as JVPs / VJPs) and with ``jac_sparsity``
(the sparse Jacobian by compressed JVPs, one per column group), against SciPy's ``trf`` +
``lsmr`` with ``jac_sparsity`` (grouped 2-point differences), in one run.

    python benchmarks/large_n.py [--sizes 1e4,1e5] [--bounded] [--problem spline] [--append]

Each (solver, n) runs in its own Python process (float64, CPU): time of the first fit
(nlsq_fn: with compilation) and the best of three more (warm), final cost, and peak
memory: the process's peak resident set size above what it held before the fit
(``ru_maxrss`` for the first fit, which includes compiling; ``VmHWM`` reset before each
warm fit), JAX's buffers not being Python objects; and tracemalloc's peak (NumPy). ``--append``
adds the table to ``benchmarks/RESULTS.md``.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent

CHILD = r"""
import json, resource, sys, time, tracemalloc
import numpy as np
import scipy.sparse as sp
solver, n, bounded, problem = sys.argv[1], int(float(sys.argv[2])), sys.argv[3] == "1", sys.argv[4]
rng = np.random.default_rng(123440)

def status_kib(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])

def rss_kib():
    return status_kib("VmRSS")

if problem == "broyden":
    x0 = -np.ones(n) + 0.1 * rng.standard_normal(n)
    lb = np.linspace(-2, -1.5, n) + 0.1 * rng.standard_normal(n)
    ub = np.linspace(-0.8, 0.0, n) + 0.1 * rng.standard_normal(n)
    x0 = np.clip(x0, lb + 1e-3, ub - 1e-3)
    bounds = (lb, ub) if bounded else (-np.inf, np.inf)
    pattern = sp.diags_array([np.ones(n - 1), np.ones(n), np.ones(n - 1)], offsets=[-1, 0, 1])
else:  # "spline": log-intensity as a cubic B-spline with n coefficients (uniform knots)
    # fitted to 3n noisy counts-like data, plus a second-difference smoothing penalty:
    # residuals exp(s(t_i)) - y_i and sqrt(lam) (c[j-1] - 2 c[j] + c[j+1]).
    m_data, lam = 3 * n, 1.0
    t = np.sort(rng.uniform(0, n - 3, m_data))  # in knot units: 4 coefficients a point
    truth = 1.0 + 0.5 * np.sin(2 * np.pi * t / 500.0)
    y = np.exp(truth) * (1 + 0.05 * rng.standard_normal(m_data))
    first = np.minimum(t.astype(np.int64), n - 4)
    u = t - first
    weights = np.stack(
        [(1 - u) ** 3, 3 * u**3 - 6 * u**2 + 4, -3 * u**3 + 3 * u**2 + 3 * u + 1, u**3], 1
    ) / 6
    columns = first[:, None] + np.arange(4)[None, :]
    x0 = np.zeros(n)
    bounds = (-np.inf, np.inf)
    data_rows = sp.csr_array(
        (np.ones(4 * m_data), columns.ravel(), np.arange(0, 4 * m_data + 1, 4)), shape=(m_data, n)
    )
    penalty = sp.diags_array([np.ones(n - 2)] * 3, offsets=[0, 1, 2], shape=(n - 2, n))
    pattern = sp.vstack([data_rows, penalty]).tocsr()

if solver.startswith("nlsq_fn"):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from nlsq_fn import least_squares

    if problem == "broyden":
        def fun(x):
            f = (3 - x) * x + 1
            f = f.at[1:].add(-x[:-1])
            return f.at[:-1].add(-2 * x[1:])
    else:
        w, cols, yj = jnp.asarray(weights), jnp.asarray(columns), jnp.asarray(y)

        def fun(c):
            s = jnp.sum(w * c[cols], axis=1)
            smooth = np.sqrt(lam) * (c[:-2] - 2 * c[1:-1] + c[2:])
            return jnp.concatenate([jnp.exp(s) - yj, smooth])

    if solver == "nlsq_fn":  # JVPs / VJPs of the model in each LSMR iteration

        def fit():
            return least_squares(fun, x0, tr_solver="lsmr", bounds=bounds)
    else:  # "nlsq_fn+sparsity": the Jacobian by compressed JVPs, LSMR on its BCOO

        def fit():
            return least_squares(fun, x0, jac_sparsity=pattern, bounds=bounds)
else:
    from scipy.optimize import least_squares

    if problem == "broyden":
        def fun(x):
            f = (3 - x) * x + 1
            f[1:] -= x[:-1]
            f[:-1] -= 2 * x[1:]
            return f
    else:
        def fun(c):
            s = np.sum(weights * c[columns], axis=1)
            smooth = np.sqrt(lam) * (c[:-2] - 2 * c[1:-1] + c[2:])
            return np.concatenate([np.exp(s) - y, smooth])

    def fit():
        return least_squares(fun, x0, jac_sparsity=pattern, method="trf", bounds=bounds)

before = rss_kib()
tracemalloc.start()
start = time.perf_counter()
result = fit()
first = time.perf_counter() - start
traced_peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
warm = []
for _ in range(3):
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets the peak RSS (VmHWM) to the current RSS
    before_warm = rss_kib()
    start = time.perf_counter()
    result = fit()
    warm.append(time.perf_counter() - start)
    warm_peak = status_kib("VmHWM") - before_warm
warm = min(warm)
print(json.dumps(dict(
    solver=solver, n=n, first_s=first, warm_s=warm, cost=float(result.cost),
    nfev=int(result.nfev), optimality=float(result.optimality), status=int(result.status),
    peak_rss_above_start_mib=(peak - before) / 1024, tracemalloc_peak_mib=traced_peak / 2**20,
    warm_peak_rss_mib=warm_peak / 1024,
)))
"""


SOLVERS = ("nlsq_fn", "nlsq_fn+sparsity", "scipy")
TITLES = {
    "broyden": "Broyden tridiagonal",
    "spline": "smoothing spline (log-intensity, cubic B-spline, 3n points)",
}


def run(solver, n, bounded, problem="broyden"):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, solver, str(n), "1" if bounded else "0", problem],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1e4,1e5")
    parser.add_argument("--bounded", action="store_true")
    parser.add_argument("--append", action="store_true")
    parser.add_argument("--problem", default="broyden", choices=["broyden", "spline"])
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        n = int(float(size))
        for solver in SOLVERS:
            rows.append(run(solver, n, args.bounded, args.problem))
            print(json.dumps(rows[-1]), flush=True)
    header = (
        "| n | solver | first fit (s) | warm fit (s) | cost | nfev | optimality | "
        "first fit: peak RSS above start (MiB) | warm fit: peak RSS above start (MiB) | "
        "tracemalloc peak (MiB) |\n"
        "|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [header]
    for r in rows:
        lines.append(
            f"| {r['n']:.0e} | {r['solver']} | {r['first_s']:.2f} | {r['warm_s']:.2f} | "
            f"{r['cost']:.2e} | {r['nfev']} | {r['optimality']:.1e} | "
            f"{r['peak_rss_above_start_mib']:.0f} | {r['warm_peak_rss_mib']:.0f} | "
            f"{r['tracemalloc_peak_mib']:.1f} |"
        )
    for n in sorted({r["n"] for r in rows}):
        theirs = next(r for r in rows if r["n"] == n and r["solver"] == "scipy")
        for name in SOLVERS[:-1]:
            ours = next(r for r in rows if r["n"] == n and r["solver"] == name)
            lines.append(
                f"\nn = {n:.0e}: SciPy / {name} time {theirs['warm_s'] / ours['warm_s']:.1f}x "
                f"warm, {theirs['warm_s'] / ours['first_s']:.1f}x first fit."
            )
    table = "\n".join(lines)
    print(table)
    if args.append:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        load = os.getloadavg()[0]
        kind = "bounded" if args.bounded else "unbounded"
        with open(HERE / "RESULTS.md", "a") as results:
            results.write(
                f"\n## Many parameters: {TITLES[args.problem]}, {kind} (issue 20, {stamp}, "
                f"`benchmarks/large_n.py --problem {args.problem}`, load average {load:.1f})\n\n"
                "nlsq_fn: `least_squares(fun, x0, tr_solver='lsmr')`, `fun` in jax.numpy "
                "(matrix-free: JVPs / VJPs in each LSMR iteration); nlsq_fn+sparsity: "
                "`least_squares(fun, x0, jac_sparsity=pattern)` (the Jacobian by compressed "
                "JVPs, one per column group, LSMR on the sparse matrix). SciPy: "
                "`least_squares(fun, x0, jac_sparsity=pattern)` (trf, lsmr, grouped 2-point "
                "differences). One process per row; the peak RSS is above the process's RSS "
                "before the fit (imports, data): the first fit's includes compiling; the warm "
                "fit's (best of 3, peak reset before each) is the fit's own working memory.\n\n"
                + table
                + "\n"
            )


if __name__ == "__main__":
    main()
