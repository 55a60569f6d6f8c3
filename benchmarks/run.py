"""Time nlsq_fn against SciPy, NLSQ, Optimistix and JAXopt on the same problems.

    python benchmarks/run.py [--quick] [--device gpu] [--only A,B] [--sizes 1e6,1e7]
                             [--solvers "SciPy,NLSQ"] [--update]

Every (solver, problem) pair runs in its own Python process, so first-call times
include compilation and peak memory (max RSS of that process) belongs to one solver.
Prints a markdown table, writes `benchmarks/results/<device>[-quick].json` (raw
results, machine description) and a log-log plot of time against problem size.

Every row is tagged with the run that measured it (its start time, UTC). `--update`
keeps the rows of earlier runs beside the new ones, but "peer ÷ ours" only ever divides
times measured in the same run: absolute times move by tens of percent between runs on
a shared machine, ratios measured side by side much less.
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

# nlsq_fn with its defaults (what users get) and with the options tuned by hand.
OUR_DEFAULTS = ("nlsq_fn TRF (defaults)", "nlsq_fn LM (defaults)")
OUR_TUNED = ("nlsq_fn TRF (tuned)", "nlsq_fn LM (tuned)")
PEERS = ("SciPy", "Optimistix LM", "JAXopt LM", "JAXopt LM (defaults)", "NLSQ")
ALL_SOLVERS = OUR_DEFAULTS + OUR_TUNED + PEERS
# Workload D also runs these: QR always, the accuracy reference for the defaults.
NIST_EXTRA = ("nlsq_fn TRF (qr)", "nlsq_fn LM (qr)")
OURS = OUR_DEFAULTS + OUR_TUNED + NIST_EXTRA
JAX_SOLVERS = OUR_DEFAULTS + OUR_TUNED + ("Optimistix LM", "JAXopt LM", "JAXopt LM (defaults)")
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
            return dict(spec, **json.loads(line[len("RESULT ") :]))
    return dict(spec, error=(done.stderr or done.stdout).strip().splitlines()[-1:])


# ----- plan, table, plot ---------------------------------------------------------------


def plan(args) -> list[dict]:
    import workloads

    solvers = args.solvers.split(",") if args.solvers else list(ALL_SOLVERS)
    wanted = (
        set(args.only.split(","))
        if args.only
        else set("ABCD") | ({"E"} if args.device == "gpu" else set())
    )
    repeats = max(3, args.repeats)
    specs = []
    if "A" in wanted:
        sizes = workloads.A_SIZES_QUICK if args.quick else workloads.A_SIZES
        if args.sizes:
            sizes = [int(float(v)) for v in args.sizes.split(",")]
        specs += [
            dict(workload="A", size=m, solver=s, repeats=repeats) for m in sizes for s in solvers
        ]
    if "B" in wanted:
        specs += [
            dict(workload="B", size=workloads.B_SIZE, solver=s, repeats=repeats) for s in solvers
        ]
    if "C" in wanted:
        specs += [
            dict(
                workload="C",
                size=workloads.C_POINTS,
                batch=workloads.C_BATCH,
                solver=s,
                repeats=repeats,
                nlsq_loop_limit=args.nlsq_loop_limit,
            )
            for s in solvers
        ]
    if "D" in wanted:
        specs += [
            dict(
                workload="D",
                size=0,
                solver=s,
                repeats=repeats,
                nist_only=list(NIST_QUICK) if args.quick else None,
            )
            for s in solvers + [e for e in NIST_EXTRA if not args.solvers]
        ]
    if "E" in wanted:
        batch = 10_000 if args.device != "gpu" else workloads.E_FITS
        specs += [
            dict(workload="E", size=25, batch=batch, solver=s, repeats=repeats)
            for s in solvers
            if s in JAX_SOLVERS
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


def _per_fit(r) -> str:
    """Batched rows: warm time per fit and the mean cost per fit over the fits timed
    (NLSQ times only the first `datasets_timed` of them)."""
    fits = r.get("datasets_timed") or r.get("batch")
    return f"{1e3 * r['warm_s'] / r['batch']:.3g} ms" if fits else "–"


def markdown(results: list[dict]) -> str:
    """One table; "fastest peer ÷ this" and "JAXopt LM ÷ this" divide warm times of the
    same workload, size and run only."""
    lines = [
        "| run | workload | size | solver | first call (s) | warm (s) | warm per fit "
        "| fastest peer ÷ this | JAXopt LM ÷ this | iterations | cost (per fit) "
        "| param. error | peak RSS (MB) | warm ÷ (evals × pass) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict = {}
    for r in results:
        groups.setdefault((r.get("run", "?"), r["workload"], r["size"]), []).append(r)
    for (run, workload, size), rows in groups.items():
        timed = [r for r in rows if "error" not in r and r.get("warm_s") is not None]
        peers = [r for r in timed if r["solver"] not in OURS]
        fastest = min((r["warm_s"] for r in peers), default=None)
        jaxopt = next((r["warm_s"] for r in peers if r["solver"] == "JAXopt LM"), None)
        for r in rows:
            label = (
                f"{size:.0e}"
                if workload in "AB"
                else (f"{r.get('batch')}×{size}" if workload in "CE" else "NIST")
            )
            head = f"| {run} | {workload} | {label} | {r['solver']} |"
            if "error" in r:
                lines.append(f"{head} failed: {r['error']} |")
                continue
            warm = r.get("warm_s")
            speedup = jaxopt_ratio = "–"
            if r["solver"] in OURS and warm:
                if fastest:
                    speedup = f"{fastest / warm:.1f}×"
                if jaxopt:
                    jaxopt_ratio = f"{jaxopt / warm:.1f}×"
            fused = "–"
            if r.get("fused_pass_s"):
                evaluations = (r["nfev"] if isinstance(r["nfev"], int) else 0) + 1
                fused = f"{r['warm_s'] / (evaluations * r['fused_pass_s']):.2f}"
            per_fit = _per_fit(r) if workload in "CE" else "–"
            if workload == "D":
                iterations = f"{r['solved']}/{r['fits']} LRE≥4"
                cost = f"LRE med {r['lre_median']:.1f}, min {r['lre_min']:.1f}"
                error = "–"
            else:
                iterations = _fmt(r["iterations"], "{}")
                if isinstance(r["cost"], list) and len(r["cost"]) > 1:
                    cost = f"{sum(r['cost']) / len(r['cost']):.6g} (mean of {len(r['cost'])})"
                elif isinstance(r["cost"], list):
                    cost = f"{r['cost'][0]:.6g}"
                else:
                    cost = _fmt(r["cost"], "{:.6g}")
                error = _fmt(r.get("param_error"), "{:.2e}")
            note = ""
            if r.get("time_scaled_by", 1.0) != 1.0:
                note = f" (×{r['time_scaled_by']:.0f} from {r['datasets_timed']} fits)"
            if warm is None:
                warm_text = f"– ({r.get('raised')} fits raised)"
            else:
                warm_text = f"{warm:.4g}{note}"
            lines.append(
                f"{head} {r['first_s']:.2f} | {warm_text} | {per_fit} | {speedup} | "
                f"{jaxopt_ratio} | {iterations} | {cost} | {error} | "
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
    parser.add_argument("--sizes", help="workload A: comma-separated sizes (e.g. 1e6,1e7)")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats (at least 3)")
    parser.add_argument(
        "--nlsq-loop-limit",
        type=int,
        default=100,
        help="workload C: NLSQ fits this many datasets and its time is scaled up",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per process")
    parser.add_argument("--out", default=str(HERE / "results"))
    parser.add_argument(
        "--update",
        action="store_true",
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
    run = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    report = dict(machine=machine(), argv=[sys.argv[1:]], runs={run: sys.argv[1:]}, results=[])
    if args.update and (out / f"{stem}.json").exists():
        previous = json.loads((out / f"{stem}.json").read_text())
        report["argv"] = previous["argv"] + report["argv"]
        report["runs"] = {**previous.get("runs", {}), **report["runs"]}
        report["results"] = previous["results"]

    for spec in plan(args):
        result = run_child(spec, args.device, args.timeout)
        result["run"] = run
        result["load_average"] = os.getloadavg()[0]
        report["results"].append(result)
        status = result.get("error") or f"warm {result.get('warm_s')} s"
        print(f"  {spec['workload']} {spec['size']} {spec['solver']}: {status}", file=sys.stderr)
        (out / f"{stem}.json").write_text(dump(report))
    table = markdown(report["results"])
    print(table)
    (out / f"{stem}.md").write_text(table + "\n")
    plot(report["results"], out / f"{stem}.png")


if __name__ == "__main__":
    main()
