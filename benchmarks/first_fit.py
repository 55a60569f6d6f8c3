"""A scientist's first fit in a fresh process: `nf.curve_fit` of a 60-point decay,
against Optimistix's first `least_squares` on the same data, with and without JAX's
persistent compilation cache (`nf.enable_compilation_cache`).

    python benchmarks/first_fit.py [--repeats 3] [--baseline PATH]

Each measurement runs in its own Python process (float64, CPU). "cold" is a process
that fills an empty cache folder, "warm" the next process on the same folder. Prints
a markdown table (medians over the repeats, processes interleaved) and writes
`results/first_fit.json`. ``--baseline PATH`` adds the nlsq_fn found in the source
tree at PATH (e.g. an older checkout) as a third solver, interleaved with the others,
for before/after numbers from one run.
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
import json, sys, time
started = time.perf_counter()
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
solver, cache = sys.argv[1], sys.argv[2]
if solver == "nlsq_fn":
    import nlsq_fn as nf
    if cache != "none":
        nf.enable_compilation_cache(cache)
else:
    import optimistix as optx
    if cache != "none":
        jax.config.update("jax_compilation_cache_dir", cache)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
imported = time.perf_counter() - started
x = np.linspace(0.0, 4.0, 60)
y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * np.random.default_rng(0).standard_normal(60)

def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c

def residual(p, args):
    return p[0] * jnp.exp(-p[1] * args[0]) + p[2] - args[1]

def fit():
    if solver == "nlsq_fn":
        popt, _ = nf.curve_fit(decay, x, y, p0=[1.0, 1.0, 0.0])
        return np.asarray(popt)
    out = optx.least_squares(residual, optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8),
                             jnp.array([1.0, 1.0, 0.0]), args=(jnp.asarray(x), jnp.asarray(y)))
    return np.asarray(out.value)

times = []
for _ in range(2):
    t = time.perf_counter(); params = fit(); times.append(time.perf_counter() - t)
source = (nf if solver == "nlsq_fn" else optx).__file__
print("RESULT " + json.dumps(dict(import_s=imported, first_s=times[0], second_s=times[1],
                                 params=params.tolist(), source=source)))
"""


def measure(solver, cache, baseline=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONWARNINGS="ignore")
    folder = None
    if solver == BASELINE:
        # `python -c` puts the working folder first on sys.path: run from the baseline.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
        solver, folder = "nlsq_fn", baseline
    done = subprocess.run(
        [sys.executable, "-c", CHILD, solver, cache],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(done.stderr[-2000:])


BASELINE = "nlsq_fn (baseline)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", help="source tree of an nlsq_fn to compare with")
    args = parser.parse_args()
    solvers = ["nlsq_fn", "Optimistix"] + ([BASELINE] if args.baseline else [])
    caches = ("no cache", "cold cache", "warm cache")
    rows = {(solver, cache): [] for solver in solvers for cache in caches}
    for _ in range(args.repeats):
        # Interleaved, so that the solvers see the same load (the machine may be shared).
        with tempfile.TemporaryDirectory() as root:
            folders = {solver: os.path.join(root, str(i)) for i, solver in enumerate(solvers)}
            for folder in folders.values():
                os.makedirs(folder)
            for cache in caches:
                for solver in solvers:
                    folder = "none" if cache == "no cache" else folders[solver]
                    rows[(solver, cache)].append(measure(solver, folder, args.baseline))
    lines = [
        "| solver | cache | import (s) | first fit (s) | second fit (s) |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for (solver, cache), found in rows.items():
        median = {
            k: statistics.median(r[k] for r in found) for k in ("import_s", "first_s", "second_s")
        }
        summary[f"{solver}, {cache}"] = dict(median, all=found)
        lines.append(
            f"| {solver} | {cache} | {median['import_s']:.2f} | {median['first_s']:.3f} | "
            f"{median['second_s']:.4f} |"
        )
    lines.append("")
    for solver in solvers:
        if solver != "Optimistix":
            ratio = (
                summary[f"{solver}, no cache"]["first_s"]
                / summary["Optimistix, no cache"]["first_s"]
            )
            lines.append(f"First fit, no cache: {solver} ÷ Optimistix = {ratio:.2f} (same run).")
    lines.append(f"Load average at the end: {os.getloadavg()[0]:.1f}.")
    table = "\n".join(lines)
    print(table)
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "first_fit.json").write_text(
        json.dumps(dict(load_average=os.getloadavg(), results=summary), indent=1)
    )
    (out / "first_fit.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
