"""The everyday fit: a 200-point exponential decay fitted as a scientist iterates on a
model in a notebook (issue 24). Each solver runs in a fresh Python process (float64,
CPU, JAX's persistent compilation cache off): the import, the first fit, five new
models written as fresh lambdas one after another, then the last model refitted 40
times on new data ("same model": the median of the last 10, once every solver has
settled; the per-fit times are in the JSON).

    python benchmarks/everyday_fit.py [--repeats 3] [--baseline PATH]

Solvers: nlsq_fn's `curve_fit` (defaults) twice: with its store of model-independent
programs warm (as in every process after the first on a machine: a process fills it
before the timed runs) and cold (an empty store, as on a machine's very first fit);
Optimistix's `least_squares` (`LevenbergMarquardt(rtol=atol=1e-8)`, jitted by
Optimistix); SciPy's `curve_fit` (MINPACK); and the import of nlsq_fn's own
dependencies (JAX, Equinox, Optimistix, Lineax) alone. ``--baseline PATH`` adds the
nlsq_fn in the source tree at PATH (an older checkout) as another solver. nlsq_fn's
sources are byte-compiled first, as the installed dependencies are (pip compiles them on
install; this machine sets PYTHONDONTWRITEBYTECODE, so an editable checkout would
otherwise be compiled from source at every import). Processes are interleaved over the
repeats; the table gives medians. Writes ``results/everyday_fit.json``.
"""

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent

CHILD = r"""
import json, statistics, sys, time
started = time.perf_counter()
solver = sys.argv[1]
if solver == "deps":
    import jax, equinox, optimistix, lineax
    print(json.dumps(dict(import_s=time.perf_counter() - started)))
    raise SystemExit
if solver == "scipy":
    import numpy as xp
    import scipy.optimize
else:
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as xp
    if solver.startswith("nlsq_fn"):
        import nlsq_fn as nf
    else:
        import optimistix as optx
imported = time.perf_counter() - started
import numpy as np
x = np.linspace(0.0, 4.0, 200)
rng = np.random.default_rng(0)
y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(200)
y_new = 2.4 * np.exp(-1.2 * x) + 0.6 + 0.02 * rng.standard_normal(200)

def new_model(k):
    # A fresh function object each time, as a notebook cell re-run makes.
    return eval(f"lambda x, a, b, c: a * xp.exp(-b * {k} * x) + c", dict(xp=xp))

residuals = {}

def fit(model, y):
    if solver == "scipy":
        return scipy.optimize.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])[0]
    if solver.startswith("nlsq_fn"):
        return np.asarray(nf.curve_fit(model, x, y, p0=[1.0, 1.0, 0.0])[0])
    # One residual function per model: Optimistix compiles once per function.
    residual = residuals.setdefault(model, lambda p, args: model(args[0], *p) - args[1])
    out = optx.least_squares(residual, optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8),
                             xp.array([1.0, 1.0, 0.0]), args=(xp.asarray(x), xp.asarray(y)))
    return np.asarray(out.value)

def timed(model, y):
    t = time.perf_counter()
    p = fit(model, y)
    return time.perf_counter() - t, p

first, p = timed(new_model(1.0), y)
new_models = [timed(new_model(1.0 + 0.01 * i), y)[0] for i in range(1, 6)]
model = new_model(1.06)
timed(model, y)
same = [timed(model, y_new)[0] for _ in range(40)]
print(json.dumps(dict(import_s=imported, first_s=first, new_model_s=new_models,
                      same_model_s=statistics.median(same[-10:]), same_model_all_s=same,
                      params=[float(v) for v in p])))
"""


def measure(solver, baseline=None, store=None):
    env = dict(os.environ)
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    if baseline is not None:
        env["PYTHONPATH"] = str(baseline)
    if store is not None:
        env["NLSQ_FN_PROGRAM_CACHE"] = str(store)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, solver],
        capture_output=True,
        text=True,
        env=env,
        cwd=baseline or HERE,
    )
    if out.returncode:
        raise RuntimeError(f"{solver} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=pathlib.Path, default=None)
    options = parser.parse_args()
    solvers = ["deps", "nlsq_fn", "nlsq_fn (store cold)", "optimistix", "scipy"]
    if options.baseline:
        solvers.append("nlsq_fn (baseline)")
    for tree in {HERE.parent, options.baseline} - {None}:
        subprocess.run([sys.executable, "-m", "compileall", "-q", str(tree / "nlsq_fn")])
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="everyday_fit_"))
    warm_store = scratch / "warm"
    measure("nlsq_fn", store=warm_store)  # fills the store, as a machine's first fit does
    runs = {solver: [] for solver in solvers}
    for repeat in range(options.repeats):
        for solver in solvers:
            baseline = options.baseline if solver.endswith("(baseline)") else None
            store = warm_store if solver == "nlsq_fn" else scratch / f"cold{repeat}{solver}"
            runs[solver].append(measure(solver, baseline, store))
    rows = {}
    for solver, results in runs.items():
        med = lambda key, results=results: statistics.median(r[key] for r in results)  # noqa: E731
        row = dict(import_s=med("import_s"))
        if solver != "deps":
            new = sorted(t for r in results for t in r["new_model_s"])
            refits = [r["same_model_all_s"] for r in results]
            row.update(
                same_model_first_10_s=statistics.median(t for r in refits for t in r[:10]),
                first_s=med("first_s"),
                new_model_median_s=statistics.median(new),
                new_model_range_s=[new[0], new[-1]],
                same_model_s=med("same_model_s"),
            )
        rows[solver] = row
    print(
        "| solver | import | first fit | each new model (median, range) | same model, new "
        "data (first 10 refits) | same model, new data (settled) |"
    )
    print("|---|---|---|---|---|---|")
    for solver, row in rows.items():
        if solver == "deps":
            print(
                f"| dependencies only (JAX, Equinox, Optimistix, Lineax) | "
                f"{row['import_s']:.2f} s | – | – | – | – |"
            )
            continue
        low, high = row["new_model_range_s"]
        print(
            f"| {solver} | {row['import_s']:.2f} s | {row['first_s'] * 1e3:.0f} ms | "
            f"{row['new_model_median_s'] * 1e3:.1f} ms ({low * 1e3:.1f}–{high * 1e3:.1f}) | "
            f"{row['same_model_first_10_s'] * 1e3:.2f} ms | "
            f"{row['same_model_s'] * 1e3:.2f} ms |"
        )
    ours, optx, scipy = rows["nlsq_fn"], rows["optimistix"], rows["scipy"]
    ratios = dict(
        new_model_vs_optimistix=ours["new_model_median_s"] / optx["new_model_median_s"],
        first_fit_vs_optimistix=ours["first_s"] / optx["first_s"],
        first_fit_store_cold_vs_optimistix=rows["nlsq_fn (store cold)"]["first_s"]
        / optx["first_s"],
        same_model_vs_scipy=ours["same_model_s"] / scipy["same_model_s"],
        import_vs_dependencies=ours["import_s"] / rows["deps"]["import_s"],
    )
    print()
    for name, value in ratios.items():
        print(f"{name}: {value:.2f}x")
    (HERE / "results").mkdir(exist_ok=True)
    with open(HERE / "results" / "everyday_fit.json", "w") as file:
        json.dump(dict(rows=rows, ratios=ratios, runs=runs), file, indent=1)


if __name__ == "__main__":
    main()
