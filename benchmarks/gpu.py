"""Workloads A, C and E on a GPU, float32 and float64, in one process and one short run.

    python benchmarks/gpu.py [--out DIR] [--budget 400] [--quick] [--streaming-points N]

A GPU is lent for minutes, not hours, so unlike `run.py` (a fresh process per solver)
every measurement here runs in this one process, most important first, and stops
starting new ones once `--budget` seconds have passed. "first" is then the first call
of that configuration in a warm process (tracing and compilation, but JAX itself
already initialised); "warm" is the median of 3 further calls. Each result is appended
to `DIR/gpu.jsonl` as soon as it is measured, so an interrupted run keeps what it did.

Workload E is Gpufit's benchmark (2-D Gaussians on 5 × 5 pixels, 5 parameters, a
million fits): fits per second are reported beside Gpufit's published 3.04 M fits/s
(GTX 1080, float32). "(LAPACK SVD)" rows switch off the batched Jacobi SVD
(`nlsq_fn._strategies.small_linalg`), to show what it is worth on this device. With
`--streaming-points`, `streaming.py` then fits that many points from `.npy` files.
"""

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
GPUFIT_FITS_PER_S = 3.04e6


def plan(quick: bool, dtype: str):
    """(workload, size, batch, solver) for one precision, in order of importance."""
    import workloads

    e_fits = 2_000 if quick else workloads.E_FITS
    c_batch = 50 if quick else workloads.C_BATCH
    a_sizes = (10_000,) if quick else (1_000_000, 10_000_000)
    ours = ("nlsq_fn TRF (defaults)", "nlsq_fn LM (defaults)")
    # What a user's batch runs by default: the compacted working batch.
    batches = ("nlsq_fn TRF (curve_fit_batch)", "nlsq_fn LM (curve_fit_batch)")
    peers = ("Optimistix LM", "JAXopt LM")
    lapack = ("nlsq_fn TRF (defaults, LAPACK SVD)",)
    if dtype == "float32":
        steps = [("E", 25, e_fits, s) for s in ours + batches + lapack + peers]
        steps += [("C", workloads.C_POINTS, c_batch, s) for s in ours[:1] + batches[:1] + peers]
        return steps + [("A", a_sizes[-1], None, s) for s in ours[:1] + peers]
    steps = [("C", workloads.C_POINTS, c_batch, s) for s in ours + batches + lapack + peers]
    steps += [("A", m, None, s) for m in a_sizes for s in ours + peers]
    return steps + [("E", 25, e_fits, s) for s in ours + ("Optimistix LM",)]


def measure(workload, size, batch, dtype, solver):
    import jax
    import numpy as np
    import workloads
    from solvers import RUNNERS

    import nlsq_fn._strategies.small_linalg as small_linalg

    problem = {
        "A": lambda: workloads.workload_a(size),
        "C": lambda: workloads.workload_c(batch, size),
        "E": lambda: workloads.workload_e(batch, workloads.E_PIXELS),
    }[workload]()
    os.environ["NLSQ_FN_BENCH_DTYPE"] = dtype
    default_limit = small_linalg.MAX_SMALL_COLUMNS
    if solver.endswith("(defaults, LAPACK SVD)"):
        small_linalg.MAX_SMALL_COLUMNS = 0
        runner = RUNNERS[solver.replace(", LAPACK SVD", "")]
    else:
        runner = RUNNERS[solver]
    try:
        result = runner(problem, 3)
    finally:
        small_linalg.MAX_SMALL_COLUMNS = default_limit
    truth = problem.truth
    result["param_error"] = workloads.parameter_error(result["params"], truth)
    if problem.batched:
        result["fits_per_s"] = batch / result["warm_s"]
        iterations = np.asarray(result.pop("iterations"))
        result["max_iterations"] = int(np.max(iterations))
        result["median_iterations"] = float(np.median(iterations))
        # The slowest member's data, to replay it on a CPU (LM float32 ran 499 iterations
        # for one member of E on an H200 where the CPU needs at most 13).
        slowest = int(np.argmax(iterations))
        result["slowest_member"] = dict(
            index=slowest,
            iterations=int(iterations[slowest]),
            y=np.asarray(problem.y[slowest], float).tolist() if problem.y.size <= 10**8 else None,
            params=np.asarray(result["params"][slowest], float).tolist(),
        )
        costs = np.asarray(result.pop("cost"), float)
        result["mean_cost"] = float(np.mean(costs))
        result.pop("nfev", None)
        result.pop("params")
    stats = jax.devices()[0].memory_stats() or {}
    result["peak_device_gb"] = stats.get("peak_bytes_in_use", 0) / 2**30
    return result


def run_group(args):
    """This process: every step of one precision (x64 on only for float64, so that
    float32 inputs stay float32 in every solver), until the deadline."""
    import jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    log = pathlib.Path(args.out) / "gpu.jsonl"
    device = str(jax.devices()[0])
    print(f"{args.dtype} on {device} ({jax.default_backend()}), jax {jax.__version__}")
    print("| workload | dtype | solver | first s | warm s | fits/s | max it | error |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    for workload, size, batch, solver in plan(args.quick, args.dtype):
        if time.time() > args.deadline:
            print(f"deadline reached: stopped before {workload} {solver}")
            break
        spec = dict(
            run=args.run,
            device=device,
            workload=workload,
            size=size,
            batch=batch,
            dtype=args.dtype,
            solver=solver,
            jax=jax.__version__,
        )
        try:
            spec.update(measure(workload, size, batch, args.dtype, solver))
        except Exception as error:  # a peer that fails gets no time, and says why
            spec["error"] = f"{type(error).__name__}: {str(error)[:300]}"
        with log.open("a") as stream:
            stream.write(json.dumps(spec) + "\n")
        head = f"| {workload} {size} {batch or ''} | {args.dtype} | {solver} |"
        if "error" in spec:
            print(f"{head} {spec['error']} |", flush=True)
            continue
        rate = f"{spec['fits_per_s']:.3g}" if "fits_per_s" in spec else ""
        print(
            f"{head} {spec['first_s']:.2f} | {spec['warm_s']:.4f} | {rate} | "
            f"{spec.get('max_iterations', '')} | {spec['param_error']:.2e} |",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument("--budget", type=float, default=400.0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--streaming-points", type=float, default=0)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dtype:
        return run_group(args)

    started = time.time()
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    run = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    # Each precision in its own process; neither may take all the GPU's memory.
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONWARNINGS="ignore")
    shares = (("float32", 0.4), ("float64", 0.8 if args.streaming_points else 1.0))
    for dtype, share in shares:
        deadline = started + share * args.budget
        command = [
            sys.executable,
            __file__,
            "--dtype",
            dtype,
            "--deadline",
            str(deadline),
            "--run",
            run,
            "--out",
            args.out,
        ] + (["--quick"] if args.quick else [])
        try:
            subprocess.run(command, env=env, timeout=deadline - time.time() + 120)
        except subprocess.TimeoutExpired:
            print(f"{dtype} group timed out")
    if args.streaming_points:
        left = started + args.budget - time.time()
        command = [
            sys.executable,
            str(HERE / "streaming.py"),
            "--points",
            str(int(args.streaming_points)),
            "--dir",
            "/tmp/nlsq_fn_stream",
        ]
        print(f"streaming: {' '.join(command[1:])} (timeout {max(left, 60):.0f} s)", flush=True)
        results = HERE / "results" / "streaming.jsonl"
        try:
            subprocess.run(command, env=env, timeout=max(left, 60), check=True)
            line = results.read_text().splitlines()[-1]
            with (pathlib.Path(args.out) / "gpu.jsonl").open("a") as stream:
                stream.write(
                    json.dumps(dict(json.loads(line), run=run, workload="streaming")) + "\n"
                )
        except (subprocess.SubprocessError, OSError, IndexError) as error:
            print(f"streaming run failed: {error!r}")
    print(
        f"GPU run done in {time.time() - started:.0f} s; Gpufit's published rate for E: "
        f"{GPUFIT_FITS_PER_S:.3g} fits/s (GTX 1080, float32)"
    )


if __name__ == "__main__":
    main()
