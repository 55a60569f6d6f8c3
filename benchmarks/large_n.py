"""Many parameters: SciPy's Broyden tridiagonal problem (its test_least_squares.py) with
n = 10⁴ and 10⁵ parameters (and as many residuals), nlsq_fn's matrix-free
``least_squares(tr_solver="lsmr")`` (JAX model, Jacobian applied as JVPs / VJPs) against
SciPy's ``trf`` + ``lsmr`` with ``jac_sparsity`` (grouped 2-point differences), in one run.

    python benchmarks/large_n.py [--sizes 1e4,1e5] [--bounded] [--append]

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
solver, n, bounded = sys.argv[1], int(float(sys.argv[2])), sys.argv[3] == "1"
rng = np.random.default_rng(123440)
x0 = -np.ones(n) + 0.1 * rng.standard_normal(n)
lb = np.linspace(-2, -1.5, n) + 0.1 * rng.standard_normal(n)
ub = np.linspace(-0.8, 0.0, n) + 0.1 * rng.standard_normal(n)
x0 = np.clip(x0, lb + 1e-3, ub - 1e-3)
bounds = (lb, ub) if bounded else (-np.inf, np.inf)

def status_kib(key):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])

def rss_kib():
    return status_kib("VmRSS")

if solver == "nlsq_fn":
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    from nlsq_fn import least_squares

    def fun(x):
        f = (3 - x) * x + 1
        f = f.at[1:].add(-x[:-1])
        return f.at[:-1].add(-2 * x[1:])

    def fit():
        return least_squares(fun, x0, tr_solver="lsmr", bounds=bounds)
else:
    import scipy.sparse as sp
    from scipy.optimize import least_squares
    pattern = sp.diags_array(
        [np.ones(n - 1), np.ones(n), np.ones(n - 1)], offsets=[-1, 0, 1]
    ).tolil()

    def fun(x):
        f = (3 - x) * x + 1
        f[1:] -= x[:-1]
        f[:-1] -= 2 * x[1:]
        return f

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


def run(solver, n, bounded):
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    env["PYTHONPATH"] = str(HERE.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, solver, str(n), "1" if bounded else "0"],
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
    args = parser.parse_args()
    rows = []
    for size in args.sizes.split(","):
        n = int(float(size))
        for solver in ("nlsq_fn", "scipy"):
            rows.append(run(solver, n, args.bounded))
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
        ours = next(r for r in rows if r["n"] == n and r["solver"] == "nlsq_fn")
        theirs = next(r for r in rows if r["n"] == n and r["solver"] == "scipy")
        lines.append(
            f"\nn = {n:.0e}: SciPy / nlsq_fn time {theirs['warm_s'] / ours['warm_s']:.1f}x "
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
                f"\n## Many parameters: Broyden tridiagonal, {kind} (issue 20, {stamp}, "
                f"`benchmarks/large_n.py`, load average {load:.1f})\n\n"
                "nlsq_fn: `least_squares(fun, x0, tr_solver='lsmr')`, `fun` in "
                "jax.numpy (matrix-free: JVPs / VJPs). SciPy: `least_squares(fun, x0, "
                "jac_sparsity=pattern)` (trf, lsmr, grouped 2-point differences). One "
                "process per row; the peak RSS is above the process's RSS before the fit "
                "(imports, data): the first fit's includes compiling; the warm fit's (best of 3, "
                "peak reset before each) is the fit's own working memory.\n\n" + table + "\n"
            )


if __name__ == "__main__":
    main()
