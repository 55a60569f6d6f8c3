"""Issue 23: a batch whose finished members stop costing (`solve_batch` on concrete
inputs, `nlsq_fn._drivers.compaction`) against the same batch as one ``vmap`` of `solve` (under
``jax.jit``), against a batch whose members all need the median number of iterations,
and against SciPy's loop of `curve_fit`.

    python benchmarks/batch_compaction.py [--side 64] [--scipy-fits 400] [--no-c]
        [--no-one-program] [--out results/batch_compaction.json]

Workloads: the pixel map of notebook 05 (``side x side`` spectra of 40 channels, a
Gaussian line on a background, starts from the data) and workload C (2,000 peaks x 200
points). All in one process, so that every ratio divides times of the same run: first
call (tracing and compilation included) and warm (median of 3 calls). The front end
(`curve_fit_batch`) is timed first, from a fresh process: its first call includes
compiling the model's program and loading (or, with an empty program store, compiling)
the model-independent ones; `program_store` says which. Point ``NLSQ_FN_PROGRAM_CACHE``
at an empty folder for a cold store. SciPy's loop is
timed on `--scipy-fits` members spread over the batch (analytic Jacobian) and scaled to
the batch. Writes ``results/batch_compaction.json``.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import equinox as eqx
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

from workloads import peak_jac_np, peak_jax, peak_np, workload_c  # noqa: E402

import nlsq_fn as nf  # noqa: E402
from nlsq_fn._drivers.batched_steps import step_lanes  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results" / "batch_compaction.json"


def line(x, p):
    amplitude, center, width, background = p
    return amplitude * jnp.exp(-0.5 * ((x - center) / width) ** 2) + background


def line_np(x, amplitude, center, width, background):
    return amplitude * np.exp(-0.5 * ((x - center) / width) ** 2) + background


def line_jac_np(x, amplitude, center, width, background):
    u = (x - center) / width
    e = np.exp(-0.5 * u**2)
    return np.stack(
        [e, amplitude * e * u / width, amplitude * e * u**2 / width, np.ones_like(x)], axis=1
    )


def pixel_map(side: int):
    """Notebook 05's spectra: (x, y, starts)."""
    channels = np.linspace(-10.0, 10.0, 40)
    row, col = np.mgrid[0:side, 0:side] / (side - 1) * 2 - 1
    radius = np.hypot(row, col)
    truth = np.stack(
        [
            (2.0 + 8.0 * np.exp(-((radius / 0.6) ** 2))).ravel(),
            (4.0 * col * np.exp(-radius)).ravel(),
            (1.2 + 1.0 * np.exp(-((radius / 0.5) ** 2))).ravel(),
            np.ones(side * side),
        ],
        axis=1,
    )
    rng = np.random.default_rng(0)
    spectra = np.stack([line_np(channels, *t) for t in truth])
    spectra = spectra + 0.5 * rng.standard_normal(spectra.shape)
    edges = np.median(np.concatenate([spectra[:, :5], spectra[:, -5:]], axis=1), axis=1)
    starts = np.stack(
        [
            spectra.max(axis=1) - edges,
            channels[spectra.argmax(axis=1)],
            np.full(side * side, 2.0),
            edges,
        ],
        axis=1,
    )
    return channels, spectra, starts


def timed(function, repeats: int = 3):
    """(first call's seconds, median warm seconds, the result)."""
    started = time.perf_counter()
    result = jax.block_until_ready(function())
    first = time.perf_counter() - started
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(function())
        warm.append(time.perf_counter() - started)
    return first, statistics.median(warm), result


def scipy_loop(model, jac, x, y, starts, fits: int) -> float:
    """Seconds of SciPy's loop over the whole batch, from `fits` members spread over it."""
    members = np.linspace(0, y.shape[0] - 1, min(fits, y.shape[0])).astype(int)
    started = time.perf_counter()
    for i in members:
        scipy.optimize.curve_fit(model, x, y[i], p0=starts[i], jac=jac)
    return (time.perf_counter() - started) / members.size * y.shape[0]


def compare(name, model, x, y, starts, scipy_seconds, one_program_too=True):
    """Times of one batch: the front end (`curve_fit_batch`, its checks and set-up
    included), compacted, one program, the median batch; and SciPy's."""
    size = y.shape[0]

    def scipy_style(x, *p):
        return model(x, jnp.stack(p))

    loads = step_lanes.loads
    front_end = timed(lambda: nf.curve_fit_batch(scipy_style, x, y, starts, progress=False)[0])
    loaded = step_lanes.loads > loads  # the model-independent programs came from the disk
    data = nf.Data(np.broadcast_to(x, y.shape), y)
    state = nf.with_starts(nf.init_batch(model, data, jnp.asarray(starts[0])), jnp.asarray(starts))
    one_program = eqx.filter_jit(nf.solve_batch)
    compacted = timed(lambda: nf.solve_batch(model, data, state))
    vmapped = timed(lambda: one_program(model, data, state)) if one_program_too else None
    nit = np.asarray(compacted[2].nit)
    median = int(np.median(nit))
    # A batch as large, of members that each need the median number of iterations.
    typical = np.flatnonzero(nit == median)
    tiled = typical[np.arange(size) % typical.size]
    median_data = nf.Data(np.broadcast_to(x, y.shape), y[tiled])
    median_state = nf.with_starts(
        nf.init_batch(model, median_data, jnp.asarray(starts[tiled[0]])),
        jnp.asarray(starts[tiled]),
    )
    median_batch = timed(lambda: nf.solve_batch(model, median_data, median_state))
    reference = compacted if vmapped is None else vmapped
    same = np.asarray(compacted[2].status) == np.asarray(reference[2].status)
    row = {
        "workload": name,
        "batch": size,
        "nit_median": median,
        "nit_max": int(nit.max()),
        "program_store": "loaded" if loaded else "compiled (cold store)",
        "curve_fit_batch_first_s": front_end[0],
        "curve_fit_batch_warm_s": front_end[1],
        "compacted_first_s": compacted[0],
        "compacted_warm_s": compacted[1],
        "one_program_first_s": reference[0] if vmapped is not None else None,
        "one_program_warm_s": reference[1] if vmapped is not None else None,
        "median_batch_warm_s": median_batch[1],
        "scipy_loop_s": scipy_seconds,
        "status_as_one_program": float(np.mean(same)),
        "largest_x_difference": float(
            np.max(np.abs(np.asarray(compacted[2].x) - np.asarray(reference[2].x)))
        ),
    }
    row["scipy_over_curve_fit_batch_first"] = scipy_seconds / front_end[0]
    row["scipy_over_curve_fit_batch_warm"] = scipy_seconds / front_end[1]
    row["scipy_over_compacted_warm"] = scipy_seconds / compacted[1]
    row["scipy_over_compacted_first"] = scipy_seconds / compacted[0]
    if vmapped is not None:
        row["one_program_over_compacted_warm"] = vmapped[1] / compacted[1]
    row["compacted_over_median_batch"] = compacted[1] / median_batch[1]
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--scipy-fits", type=int, default=400)
    parser.add_argument("--no-c", action="store_true")
    parser.add_argument("--no-one-program", action="store_true", help="skip jit(vmap(solve))")
    options = parser.parse_args()
    rows = []
    x, y, starts = pixel_map(options.side)
    seconds = scipy_loop(line_np, line_jac_np, x, y, starts, options.scipy_fits)
    rows.append(
        compare(
            f"pixel map {options.side}x{options.side} x 40",
            line,
            x,
            y,
            starts,
            seconds,
            not options.no_one_program,
        )
    )
    print(json.dumps(rows[-1], indent=1), flush=True)
    if not options.no_c:
        problem = workload_c()
        starts = np.tile(problem.p0, (problem.y.shape[0], 1))
        seconds = scipy_loop(
            lambda x, *p: peak_np(x, np.array(p)),
            lambda x, *p: peak_jac_np(x, np.array(p)),
            problem.x,
            problem.y,
            starts,
            options.scipy_fits,
        )
        rows.append(
            compare(
                problem.name,
                peak_jax,
                problem.x,
                problem.y,
                starts,
                seconds,
                not options.no_one_program,
            )
        )
        print(json.dumps(rows[-1], indent=1), flush=True)
    record = {
        "rows": rows,
        "load_average": os.getloadavg(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    pathlib.Path(options.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
