"""NIST StRD LREs of nlsq_fn's fits, configured as `tests/test_nist.py` (tolerances 1e-15,
LM with ``factor=10``), for each factorization: the accuracy side of the defaults.

    python benchmarks/nist_lre.py [--factorizations auto,qr,normal] [--chunk-size 8]
                                  [--strategies TRF,LM,Dogbox]

Prints, per strategy and factorization, the median and smallest LRE over the 54 fits (27
problems from both starting points), how many are >= 6, and the problems below 8. With
`--chunk-size` the data are evaluated in chunks of that many points (NIST problems have
6 to 250), which is where ``"auto"`` sums ``JᵀJ`` and checks its conditioning.
"""

import argparse
import pathlib
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
from nist import load_problems, log_relative_error  # noqa: E402

import nlsq_fn as nf  # noqa: E402

TOLERANCES = dict(ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=10_000)


class _Model(eqx.Module):
    fn: object = eqx.field(static=True)
    points_first: bool = eqx.field(static=True, default=False)

    def __call__(self, x, p):
        # Chunks split the leading axis: 2-D inputs are stored points-first for them.
        return self.fn(x.T if self.points_first else x, p)


def lres(problem, strategy, factorization, chunk_size):
    x = np.asarray(problem["x"])
    points_first = chunk_size is not None and x.ndim == 2
    model = _Model(problem["model"], points_first)
    data = nf.Data(x.T if points_first else x, problem["y"])
    solver = nf.Solver(
        strategy=strategy, factorization=factorization, chunk_size=chunk_size, **TOLERANCES
    )

    @jax.jit
    def fit(start):
        return nf.solve(model, data, nf.init(model, data, start, solver)).x

    return [
        log_relative_error(np.asarray(fit(jnp.asarray(s))), problem["certified"])
        for s in problem["starts"]
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factorizations", default="auto,qr")
    parser.add_argument("--chunk-size", type=int, default=None)
    parser.add_argument("--strategies", default="TRF,LM")
    args = parser.parse_args()
    problems = load_problems()
    known = {"TRF": nf.TRF(), "LM": nf.LevenbergMarquardt(factor=10.0), "Dogbox": nf.Dogbox()}
    strategies = {name: known[name] for name in args.strategies.split(",")}
    chunks = args.chunk_size or "one shot"
    print(
        "| strategy | factorization | chunks | fits with LRE ≥ 6 | median LRE | min LRE "
        "| fits below 8 |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, strategy in strategies.items():
        for factorization in args.factorizations.split(","):
            found = {p["name"]: lres(p, strategy, factorization, args.chunk_size) for p in problems}
            values = np.array([v for pair in found.values() for v in pair])
            low = ", ".join(f"{k} {min(v):.1f}" for k, v in found.items() if not min(v) >= 8)
            print(
                f"| {name} | {factorization} | {chunks} | "
                f"{int(np.sum(values >= 6))}/{values.size} | {np.median(values):.2f} | "
                f"{np.min(values):.2f} | {low or '–'} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
