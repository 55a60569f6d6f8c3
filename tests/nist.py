"""The NIST StRD nonlinear-regression problems as JAX models, with certified values."""

import json
import pathlib

import jax.numpy as jnp
import numpy as np

PROBLEMS_FILE = (
    pathlib.Path(__file__).resolve().parents[1].parent / "shared/data/nist_strd/problems.json"
)


def _models():
    e, pi = jnp.exp, jnp.pi
    # Problems that share a formula and a data size share one function object, so a
    # test session compiles their fits once (jit caches on the function's identity).
    lanczos = lambda x, b: b[0] * e(-b[1] * x) + b[2] * e(-b[3] * x) + b[4] * e(-b[5] * x)  # noqa: E731
    return {
        "Misra1a": lambda x, b: b[0] * (1 - e(-b[1] * x)),
        "Chwirut2": lambda x, b: e(-b[0] * x) / (b[1] + b[2] * x),
        "Chwirut1": lambda x, b: e(-b[0] * x) / (b[1] + b[2] * x),
        "Lanczos3": lanczos,
        "Gauss1": _gauss,
        "Gauss2": _gauss,
        "DanWood": lambda x, b: b[0] * x ** b[1],
        "Misra1b": lambda x, b: b[0] * (1 - (1 + b[1] * x / 2) ** (-2)),
        "Kirby2": lambda x, b: (b[0] + b[1] * x + b[2] * x**2) / (1 + b[3] * x + b[4] * x**2),
        "Hahn1": lambda x, b: _rational3(x, b),
        "Nelson": lambda x, b: b[0] - b[1] * x[0] * e(-b[2] * x[1]),
        "MGH17": lambda x, b: b[0] + b[1] * e(-x * b[3]) + b[2] * e(-x * b[4]),
        "Lanczos1": lanczos,
        "Lanczos2": lanczos,
        "Gauss3": _gauss,
        "Misra1c": lambda x, b: b[0] * (1 - (1 + 2 * b[1] * x) ** (-0.5)),
        "Misra1d": lambda x, b: b[0] * b[1] * x * (1 + b[1] * x) ** (-1),
        "Roszman1": lambda x, b: b[0] - b[1] * x - jnp.arctan(b[2] / (x - b[3])) / pi,
        "ENSO": lambda x, b: (
            b[0]
            + b[1] * jnp.cos(2 * pi * x / 12)
            + b[2] * jnp.sin(2 * pi * x / 12)
            + b[4] * jnp.cos(2 * pi * x / b[3])
            + b[5] * jnp.sin(2 * pi * x / b[3])
            + b[7] * jnp.cos(2 * pi * x / b[6])
            + b[8] * jnp.sin(2 * pi * x / b[6])
        ),
        "MGH09": lambda x, b: b[0] * (x**2 + x * b[1]) / (x**2 + x * b[2] + b[3]),
        "Thurber": lambda x, b: _rational3(x, b),
        "BoxBOD": lambda x, b: b[0] * (1 - e(-b[1] * x)),
        "Rat42": lambda x, b: b[0] / (1 + e(b[1] - b[2] * x)),
        "MGH10": lambda x, b: b[0] * e(b[1] / (x + b[2])),
        "Eckerle4": lambda x, b: (b[0] / b[1]) * e(-0.5 * ((x - b[2]) / b[1]) ** 2),
        "Rat43": lambda x, b: b[0] / ((1 + e(b[1] - b[2] * x)) ** (1 / b[3])),
        "Bennett5": lambda x, b: b[0] * (b[1] + x) ** (-1 / b[2]),
    }


def _gauss(x, b):
    e = jnp.exp
    return (
        b[0] * e(-b[1] * x)
        + b[2] * e(-((x - b[3]) ** 2) / b[4] ** 2)
        + b[5] * e(-((x - b[6]) ** 2) / b[7] ** 2)
    )


def _rational3(x, b):
    numerator = b[0] + b[1] * x + b[2] * x**2 + b[3] * x**3
    return numerator / (1 + b[4] * x + b[5] * x**2 + b[6] * x**3)


MODELS = _models()


def load_problems():
    """Each problem: name, model, x, y, starts, certified values."""
    raw = json.loads(PROBLEMS_FILE.read_text())["problems"]
    problems = []
    for p in raw:
        x = np.asarray(p["x"], dtype=float)
        if x.ndim == 2 and x.shape[0] != 2:
            x = x.T
        y = np.asarray(p["y"], dtype=float)
        if p.get("y_transform") == "log":
            y = np.log(y)
        problems.append(
            dict(
                name=p["name"],
                model=MODELS[p["name"]],
                x=x,
                y=y,
                starts=(np.asarray(p["start1"], float), np.asarray(p["start2"], float)),
                certified=np.asarray(p["certified_values"], float),
                certified_rss=p["certified_rss"],
            )
        )
    return problems


def log_relative_error(estimate, certified, cap=11.0):
    """Minimum over parameters of -log10(|p - p_cert| / |p_cert|), capped; 0 (no correct
    digit) when any estimate is not finite, so a NaN can never pass for a good fit."""
    estimate = np.asarray(estimate, float)
    if not np.all(np.isfinite(estimate)):
        return 0.0
    rel = np.abs(estimate - certified) / np.abs(certified)
    with np.errstate(divide="ignore"):
        lre = -np.log10(rel)
    return float(np.min(np.clip(lre, 0.0, cap)))
