"""Issue 19: a global fit (2 shared + 3 local parameters per dataset) evaluated by
per-dataset blocks (``engine="block"``) against the dense stacked problem through `solve`
(``engine="dense"``) and against `scipy.optimize.least_squares` on the stacked problem
(dense exact Jacobian from JAX).

    python benchmarks/global_fit.py [--datasets 200] [--points 100] [--scipy]
    python benchmarks/global_fit.py --datasets 2000 --points 200 --engines block

Each engine runs in a fresh process: first call (tracing and compilation included),
warm call (median of 3), the process's peak resident memory (``ru_maxrss``: Python,
JAX and the data included) and what the fits added to it (after the data were made).
Prints a table; the parameters of every engine are compared with the first engine's
(the dense engine's when it runs). The issue's scale case (2,000 x 200, n = 6,002) runs
with the block engine alone: the dense Jacobian would take 19 GB.
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

import nlsq_fn as nf  # noqa: E402


def line(x, amp, center, slope, width, offset):
    """A Gaussian line on a sloped background; `width` and `offset` are shared."""
    return amp * jnp.exp(-0.5 * ((x - center) / width) ** 2) + offset + slope * x


def datasets(k: int, m: int):
    rng = np.random.default_rng(0)
    out = []
    for _ in range(k):
        x = np.linspace(-4.0, 4.0, m)
        amp, center, slope = rng.uniform(0.5, 2.0), rng.uniform(-1, 1), rng.uniform(-0.1, 0.1)
        y = np.asarray(line(x, amp, center, slope, 0.7, 0.3)) + 0.02 * rng.normal(size=m)
        out.append((x, y))
    return out


P0 = {"amp": 1.0, "center": 0.0, "slope": 0.0, "width": 1.0, "offset": 0.0}
SHARED = ("width", "offset")


def run_engine(engine: str, k: int, m: int) -> dict:
    data = datasets(k, m)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    if engine == "scipy":
        result = scipy_stacked(data)
    else:
        result = nf.global_fit(line, data, P0, shared=SHARED, engine=engine)
    first = time.perf_counter() - start
    result = as_dict(result)
    warm = []
    for _ in range(3):
        start = time.perf_counter()
        if engine == "scipy":
            scipy_stacked(data)
        else:
            nf.global_fit(line, data, P0, shared=SHARED, engine=engine)
        warm.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(
        engine=engine,
        first_s=first,
        warm_s=statistics.median(warm),
        peak_mb=(peak - before) / 1024,
        total_peak_mb=peak / 1024,
        nfev=int(result["nfev"]),
        cost=float(result["cost"]),
        x=np.asarray(result["x"]).tolist(),
        perr=np.asarray(result["perr"]).tolist(),
    )


def scipy_stacked(data):
    import scipy.optimize

    k = len(data)
    xs = jnp.asarray(np.stack([x for x, _ in data]))
    ys = jnp.asarray(np.stack([y for _, y in data]))

    def residual(theta):
        local = jnp.reshape(theta[2:], (k, 3))
        prediction = jax.vmap(line, in_axes=(0, 0, 0, 0, None, None))(
            xs, local[:, 0], local[:, 1], local[:, 2], theta[0], theta[1]
        )
        return (prediction - ys).ravel()

    fun, jac = jax.jit(residual), jax.jit(jax.jacfwd(residual))
    theta0 = np.r_[1.0, 0.0, np.tile([1.0, 0.0, 0.0], k)]
    result = scipy.optimize.least_squares(
        lambda t: np.asarray(fun(t)),
        theta0,
        jac=lambda t: np.asarray(jac(t)),
        method="trf",
        x_scale=1.0,
    )
    # SciPy's curve_fit recipe on the stacked problem: (JᵀJ)⁻¹ times the reduced χ².
    j = np.asarray(jac(result.x))
    dof = j.shape[0] - j.shape[1]
    pcov = np.linalg.inv(j.T @ j) * 2 * result.cost / dof
    return dict(nfev=result.nfev, cost=result.cost, x=result.x, perr=np.sqrt(np.diag(pcov)))


def as_dict(result):
    if isinstance(result, dict):
        return result
    return dict(nfev=result.nfev, cost=result.cost, x=result.x, perr=result.perr_flat)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--scipy", action="store_true", help="also time SciPy")
    parser.add_argument("--engines", default="dense,block", help="comma-separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        out = run_engine(args.worker, args.datasets, args.points)
        print(json.dumps(out))
        return
    engines = args.engines.split(",") + (["scipy"] if args.scipy else [])
    rows = []
    for engine in engines:
        command = [
            sys.executable,
            __file__,
            "--worker",
            engine,
            "--datasets",
            str(args.datasets),
            "--points",
            str(args.points),
        ]
        out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            raise SystemExit(f"{engine} failed")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    k, m = args.datasets, args.points
    n = 2 + 3 * k
    print(
        f"global fit: {k} datasets x {m} points, 2 shared + 3 local parameters "
        f"(n = {n}, m = {k * m}; dense Jacobian {k * m * n * 8 / 1e6:.0f} MB)"
    )
    reference = np.asarray(rows[0]["x"])
    reference_perr = np.asarray(rows[0]["perr"])
    print(
        f"{'engine':<8} {'first call s':>12} {'warm s':>8} {'fit MB':>8} {'process MB':>10} "
        f"{'nfev':>5} {'x rel diff to ' + rows[0]['engine']:>20} {'perr rel diff':>13}"
    )
    for row in rows:
        x = np.asarray(row["x"])
        diff = np.max(np.abs(x - reference) / np.maximum(np.abs(reference), 1e-12))
        perr = np.asarray(row["perr"])
        perr_diff = np.max(np.abs(perr - reference_perr) / reference_perr)
        print(
            f"{row['engine']:<8} {row['first_s']:>12.2f} {row['warm_s']:>8.3f} "
            f"{row['peak_mb']:>8.0f} {row['total_peak_mb']:>10.0f} {row['nfev']:>5} "
            f"{diff:>20.2e} {perr_diff:>13.2e}"
        )
    by_engine = {row["engine"]: row for row in rows}
    if "scipy" in by_engine:
        scipy_row = by_engine["scipy"]
        for row in rows:
            if row["engine"] != "scipy":
                print(
                    f"SciPy / {row['engine']}: first call "
                    f"{scipy_row['first_s'] / row['first_s']:.1f}x, warm "
                    f"{scipy_row['warm_s'] / row['warm_s']:.1f}x"
                )
    print(f"load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
