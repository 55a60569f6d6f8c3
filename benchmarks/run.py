"""Time nlsq_fn against SciPy, NLSQ, Optimistix and JAXopt on the same problems.

    python benchmarks/run.py [--quick] [--device gpu] [--only A,B] [--solvers "SciPy,NLSQ"]

Every (solver, problem) pair runs in its own Python process, so first-call times
include compilation and peak memory (max RSS of that process) belongs to one solver.
Prints a markdown table, writes `benchmarks/results/<device>[-quick].json` (raw
results, machine description) and a log-log plot of time against problem size.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import resource
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

ALL_SOLVERS = ("nlsq_fn TRF", "nlsq_fn LM", "SciPy", "Optimistix LM", "JAXopt LM", "NLSQ")
# Workload D also runs these, to measure what forming JᵀJ costs in accuracy.
NIST_EXTRA = ("nlsq_fn TRF (normal)", "nlsq_fn LM (normal)")
OURS = ("nlsq_fn TRF", "nlsq_fn LM") + NIST_EXTRA
JAX_SOLVERS = ("nlsq_fn TRF", "nlsq_fn LM", "Optimistix LM", "JAXopt LM")
# NIST subset for --quick: easy, average and hard problems.
NIST_QUICK = ("Misra1a", "Chwirut2", "Lanczos3", "Kirby2", "MGH09", "Thurber", "Bennett5")


# ----- child process -------------------------------------------------------------------


def child(spec: dict) -> dict:
    import jax

    if spec["workload"] != "E":
        jax.config.update("jax_enable_x64", True)
    import workloads
    from solvers import RUNNERS

    if spec["workload"] == "D":
        from nist_suite import run_nist

        result = run_nist(spec["solver"], spec["repeats"], only=spec.get("nist_only"))
    else:
        problem = {
            "A": lambda: workloads.workload_a(spec["size"]),
            "B": lambda: workloads.workload_b(spec["size"]),
            "C": lambda: workloads.workload_c(spec["batch"], spec["size"]),
            "E": lambda: workloads.workload_e(spec["batch"], workloads.E_PIXELS),
        }[spec["workload"]]()
        options = {}
        if spec["solver"] == "NLSQ" and problem.batched:
            options["loop_limit"] = spec.get("nlsq_loop_limit")
        result = RUNNERS[spec["solver"]](problem, spec["repeats"], **options)
        truth = problem.truth[: len(result["params"])] if problem.batched else problem.truth
        result["param_error"] = workloads.parameter_error(result["params"], truth)
        if problem.batched:
            result.pop("params")  # thousands of fits: keep the JSON readable
    result.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    result["device"] = str(jax.devices()[0])
    return result


def run_child(spec: dict, device: str, timeout: float) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cuda" if device == "gpu" else "cpu"
    env.setdefault("PYTHONWARNINGS", "ignore")
    command = [sys.executable, str(HERE / "run.py"), "--child", json.dumps(spec)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE
        )
    except subprocess.TimeoutExpired:
        return dict(spec, error=f"timed out after {timeout:.0f} s")
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(spec, **json.loads(line[len("RESULT "):]))
    return dict(spec, error=(done.stderr or done.stdout).strip().splitlines()[-1:])


# ----- plan, table, plot ---------------------------------------------------------------


def plan(args) -> list[dict]:
    import workloads

    solvers = args.solvers.split(",") if args.solvers else list(ALL_SOLVERS)
    wanted = set(args.only.split(",")) if args.only else set("ABCD") | (
        {"E"} if args.device == "gpu" else set()
    )
    repeats = max(3, args.repeats)
    specs = []
    if "A" in wanted:
        sizes = workloads.A_SIZES_QUICK if args.quick else workloads.A_SIZES
        specs += [
            dict(workload="A", size=m, solver=s, repeats=repeats) for m in sizes for s in solvers
        ]
    if "B" in wanted:
        specs += [
            dict(workload="B", size=workloads.B_SIZE, solver=s, repeats=repeats)
            for s in solvers
        ]
    if "C" in wanted:
        specs += [
            dict(
                workload="C", size=workloads.C_POINTS, batch=workloads.C_BATCH, solver=s,
                repeats=repeats, nlsq_loop_limit=args.nlsq_loop_limit,
            )
            for s in solvers
        ]
    if "D" in wanted:
        specs += [
            dict(
                workload="D", size=0, solver=s, repeats=repeats,
                nist_only=list(NIST_QUICK) if args.quick else None,
            )
            for s in solvers + [e for e in NIST_EXTRA if not args.solvers]
        ]
    if "E" in wanted:
        batch = 10_000 if args.device != "gpu" else workloads.E_FITS
        specs += [
            dict(workload="E", size=25, batch=batch, solver=s, repeats=repeats)
            for s in solvers if s in JAX_SOLVERS
        ]
    return specs


def _fmt(value, spec="{:.3g}"):
    if value is None:
        return "–"
    if isinstance(value, list):
        if not value:
            return "–"
        import numpy as np

        return f"{np.median(value):.0f} (max {np.max(value):.0f})"
    return spec.format(value)


def markdown(results: list[dict]) -> str:
    lines = [
        "| workload | size | solver | first call (s) | warm (s) | peer ÷ ours | iterations "
        "| cost | param. error | peak RSS (MB) | warm ÷ (evals × pass) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in results:
        groups.setdefault((r["workload"], r["size"]), []).append(r)
    for (workload, size), rows in groups.items():
        peers = [r for r in rows if r["solver"] not in OURS and "error" not in r]
        fastest = min((r["warm_s"] for r in peers), default=None)
        for r in rows:
            label = f"{size:.0e}" if workload in "AB" else (
                f"{r.get('batch')}×{size}" if workload in "CE" else "NIST"
            )
            if "error" in r:
                lines.append(f"| {workload} | {label} | {r['solver']} | failed: {r['error']} |")
                continue
            speedup = "–"
            if r["solver"] in OURS and fastest:
                speedup = f"{fastest / r['warm_s']:.1f}×"
            fused = "–"
            if r.get("fused_pass_s"):
                evaluations = (r["nfev"] if isinstance(r["nfev"], int) else 0) + 1
                fused = f"{r['warm_s'] / (evaluations * r['fused_pass_s']):.2f}"
            if workload == "D":
                iterations = f"{r['solved']}/{r['fits']} LRE≥4"
                cost = f"LRE med {r['lre_median']:.1f}, min {r['lre_min']:.1f}"
                error = "–"
            else:
                iterations = _fmt(r["iterations"], "{}")
                cost = _fmt(
                    sum(r["cost"]) if isinstance(r["cost"], list) else r["cost"], "{:.6g}"
                )
                error = _fmt(r.get("param_error"), "{:.2e}")
            note = ""
            if r.get("time_scaled_by", 1.0) != 1.0:
                note = f" (×{r['time_scaled_by']:.0f} from {r['datasets_timed']} fits)"
            lines.append(
                f"| {workload} | {label} | {r['solver']} | {r['first_s']:.2f} | "
                f"{r['warm_s']:.4g}{note} | {speedup} | {iterations} | {cost} | {error} | "
                f"{r['peak_rss_mb']:.0f} | {fused} |"
            )
    return "\n".join(lines)


def plot(results: list[dict], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results if r["workload"] == "A" and "error" not in r]
    if not rows:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for solver in dict.fromkeys(r["solver"] for r in rows):
        mine = sorted((r for r in rows if r["solver"] == solver), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        style = "-o" if solver in OURS else "--s"
        axes[0].loglog(sizes, [r["warm_s"] for r in mine], style, label=solver)
        axes[1].loglog(sizes, [r["first_s"] for r in mine], style, label=solver)
    titles = ("warm (median of repeats)", "first call (with compilation)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel("data points")
        ax.set_ylabel("seconds")
        ax.set_title(f"Workload A, a·exp(−b·x)+c: {title}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def dump(report: dict) -> str:
    """JSON with one line per result (batched rows hold thousands of numbers)."""
    rows = ",\n  ".join(json.dumps(r) for r in report["results"])
    head = {k: v for k, v in report.items() if k != "results"}
    return json.dumps(head, indent=1)[:-2] + ',\n "results": [\n  ' + rows + "\n ]\n}\n"


def machine() -> dict:
    info = dict(
        python=platform.python_version(),
        platform=platform.platform(),
        cpus=os.cpu_count(),
        load_average_at_start=os.getloadavg(),
        date=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache")
        info["lscpu"] = {
            k.strip(): v.strip()
            for k, _, v in (line.partition(":") for line in lscpu.splitlines())
            if k.strip() in keep
        }
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    info["versions"] = {}
    for package in ("jax", "jaxlib", "equinox", "optimistix", "jaxopt", "nlsq", "scipy", "numpy"):
        try:
            info["versions"][package] = version(package)
        except PackageNotFoundError:
            info["versions"][package] = None
    return info


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, NIST subset")
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--only", help="comma-separated workloads (A,B,C,D,E)")
    parser.add_argument("--solvers", help="comma-separated, from: " + ", ".join(ALL_SOLVERS))
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats (at least 3)")
    parser.add_argument(
        "--nlsq-loop-limit", type=int, default=100,
        help="workload C: NLSQ fits this many datasets and its time is scaled up",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--update", action="store_true",
        help="replace the matching rows of an earlier results file instead of starting anew",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = args.device + ("-quick" if args.quick else "")
    report = dict(machine=machine(), argv=[sys.argv[1:]], results=[])
    if args.update and (out / f"{stem}.json").exists():
        previous = json.loads((out / f"{stem}.json").read_text())
        report["argv"] = previous["argv"] + report["argv"]
        report["results"] = previous["results"]

    def key(r):
        return (r["workload"], r["size"], r["solver"])

    for spec in plan(args):
        result = run_child(spec, args.device, args.timeout)
        result["load_average"] = os.getloadavg()[0]
        rows = report["results"]
        at = [i for i, r in enumerate(rows) if key(r) == key(result)]
        if at:
            rows[at[0]] = result
        else:
            rows.append(result)
        status = result.get("error") or f"warm {result['warm_s']:.4g} s"
        print(f"  {spec['workload']} {spec['size']} {spec['solver']}: {status}", file=sys.stderr)
        (out / f"{stem}.json").write_text(dump(report))
    table = markdown(report["results"])
    print(table)
    (out / f"{stem}.md").write_text(table + "\n")
    plot(report["results"], out / f"{stem}.png")


if __name__ == "__main__":
    main()
