"""Issue 23's front end over ragged datasets: `curve_fit_batch` on lists of datasets of
three lengths (grouped by length: one batched fit per length; and ``pad=True``: one
padded batch) against SciPy's loop of `curve_fit`, member by member.

    python benchmarks/curve_fit_batch_ragged.py [--members 2000] [--lengths 30 45 60]
        [--padded-first] [--out results/curve_fit_batch_ragged.json]

A decay ``a exp(-b x) + c`` with noise, its own parameters per member, members of the
three lengths shuffled. One process, so that every ratio divides times of the same run:
first call (tracing and compilation included; the model-independent programs from the
program store where it holds them; the front end timed second reuses some of the
first's programs, hence `--padded-first`) and warm (median of 3 calls). SciPy's loop (analytic
Jacobian, LM as `curve_fit`'s default) is timed on every member. Writes
``results/curve_fit_batch_ragged.json``.
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.optimize  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))

import nlsq_fn as nf  # noqa: E402

RESULTS = pathlib.Path(__file__).parent / "results" / "curve_fit_batch_ragged.json"
P0 = [1.0, 0.5, 0.0]


def decay(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def decay_np(x, a, b, c):
    return a * np.exp(-b * x) + c


def decay_jac_np(x, a, b, c):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e, np.ones_like(e)], axis=1)


def datasets(members: int, lengths: list[int], seed: int = 0):
    rng = np.random.default_rng(seed)
    sizes = rng.permutation(np.resize(lengths, members))
    xs = [np.linspace(0.0, 4.0, m) for m in sizes]
    truth = np.stack(
        [
            rng.uniform(1.5, 3.0, members),
            rng.uniform(0.8, 1.6, members),
            rng.uniform(0.2, 0.8, members),
        ],
        axis=1,
    )
    ys = [
        decay_np(x, *p) + 0.05 * rng.standard_normal(x.size) for x, p in zip(xs, truth, strict=True)
    ]
    return xs, ys


def timed(call, repeats=3):
    """(first call, median of `repeats` warm calls) in seconds; results are blocked on."""
    start = time.perf_counter()
    jax.block_until_ready(call())
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(call())
        warm.append(time.perf_counter() - start)
    return first, statistics.median(warm)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=2000)
    parser.add_argument("--lengths", type=int, nargs="+", default=[30, 45, 60])
    parser.add_argument("--padded-first", action="store_true")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    xs, ys = datasets(args.members, args.lengths)
    load = os.getloadavg()[0]

    runs = {
        "grouped": lambda: nf.curve_fit_batch(decay, xs, ys, P0, progress=False)[0],
        "padded": lambda: nf.curve_fit_batch(decay, xs, ys, P0, pad=True, progress=False)[0],
    }
    order = ["padded", "grouped"] if args.padded_first else ["grouped", "padded"]
    times = {name: timed(runs[name]) for name in order}
    grouped, padded = times["grouped"], times["padded"]
    start = time.perf_counter()
    reference = [
        scipy.optimize.curve_fit(decay_np, x, y, p0=P0, jac=decay_jac_np)[0]
        for x, y in zip(xs, ys, strict=True)
    ]
    scipy_seconds = time.perf_counter() - start
    popt = np.asarray(nf.curve_fit_batch(decay, xs, ys, P0, progress=False)[0])
    worst = float(np.max(np.abs(popt - np.stack(reference)) / np.abs(np.stack(reference))))

    row = {
        "members": args.members,
        "lengths": args.lengths,
        "timed_first": order[0],
        "load_average_1min": load,
        "scipy_loop_s": scipy_seconds,
        "grouped_first_s": grouped[0],
        "grouped_warm_s": grouped[1],
        "padded_first_s": padded[0],
        "padded_warm_s": padded[1],
        "max_relative_popt_difference_to_scipy": worst,
        "devices": str(jax.devices()),
    }
    print(f"{args.members} decays of lengths {args.lengths}, load {load:.1f}, {jax.devices()}")
    print("| front end | first call | warm | SciPy loop / first | SciPy loop / warm |")
    print("|---|---|---|---|---|")
    for name, (first, warm) in (("grouped by length", grouped), ("pad=True", padded)):
        print(
            f"| {name} | {first:.2f} s | {warm:.3f} s | {scipy_seconds / first:.1f}× "
            f"| {scipy_seconds / warm:.1f}× |"
        )
    print(f"SciPy loop: {scipy_seconds:.2f} s; max |popt - SciPy's| / |SciPy's| = {worst:.1e}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
