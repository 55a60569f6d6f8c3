"""The benchmark problems: data, true parameters, starting points and models.

Every solver sees the same data (generated here from a fixed seed), the same starting
point and the same model, written once with `jax.numpy` (JAX solvers) and once with
NumPy together with its analytic Jacobian (SciPy, which would otherwise difference it).
"""

import dataclasses
import pathlib
import sys

import numpy as np

A_SIZES = (10_000, 100_000, 1_000_000, 10_000_000)
A_SIZES_QUICK = (10_000, 100_000, 1_000_000)
B_SIZE = 100_000
C_BATCH, C_POINTS = 2_000, 200
E_FITS, E_PIXELS = 1_000_000, 5


@dataclasses.dataclass(frozen=True)
class Problem:
    """One fitting problem (or a batch of them, for workloads C and E)."""

    workload: str
    name: str
    x: np.ndarray
    y: np.ndarray  # (m,) or (batch, m)
    p0: np.ndarray
    truth: np.ndarray  # (n,) or (batch, n)

    @property
    def size(self) -> int:
        return int(self.y.shape[-1])

    @property
    def batched(self) -> bool:
        return self.y.ndim == 2


# ----- models: JAX form model(x, p), NumPy form and analytic Jacobian (m, n) ----------


def exp_decay_jax(x, p):
    import jax.numpy as jnp

    return p[0] * jnp.exp(-p[1] * x) + p[2]


def exp_decay_np(x, p):
    return p[0] * np.exp(-p[1] * x) + p[2]


def exp_decay_jac_np(x, p):
    e = np.exp(-p[1] * x)
    return np.stack([e, -p[0] * x * e, np.ones_like(x)], axis=1)


def gaussians_jax(x, p):
    import jax.numpy as jnp

    peaks = [p[i] * jnp.exp(-0.5 * ((x - p[i + 1]) / p[i + 2]) ** 2) for i in (0, 3, 6)]
    return peaks[0] + peaks[1] + peaks[2] + p[9]


def gaussians_np(x, p):
    peaks = [p[i] * np.exp(-0.5 * ((x - p[i + 1]) / p[i + 2]) ** 2) for i in (0, 3, 6)]
    return peaks[0] + peaks[1] + peaks[2] + p[9]


def gaussians_jac_np(x, p):
    columns = []
    for i in (0, 3, 6):
        a, mu, s = p[i], p[i + 1], p[i + 2]
        u = (x - mu) / s
        e = np.exp(-0.5 * u**2)
        columns += [e, a * e * u / s, a * e * u**2 / s]
    columns.append(np.ones_like(x))
    return np.stack(columns, axis=1)


def peak_jax(x, p):
    import jax.numpy as jnp

    return p[0] * jnp.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]


def peak_np(x, p):
    return p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]


def peak_jac_np(x, p):
    u = (x - p[1]) / p[2]
    e = np.exp(-0.5 * u**2)
    return np.stack([e, p[0] * e * u / p[2], p[0] * e * u**2 / p[2], np.ones_like(x)], axis=1)


def gauss2d_jax(x, p):
    """Gpufit's GAUSS_2D: amplitude, x0, y0, width, offset on a square pixel grid."""
    import jax.numpy as jnp

    u, v = x[0], x[1]
    return p[0] * jnp.exp(-((u - p[1]) ** 2 + (v - p[2]) ** 2) / (2 * p[3] ** 2)) + p[4]


MODELS = {
    "A": (exp_decay_jax, exp_decay_np, exp_decay_jac_np),
    "B": (gaussians_jax, gaussians_np, gaussians_jac_np),
    "C": (peak_jax, peak_np, peak_jac_np),
    "E": (gauss2d_jax, None, None),
}


# ----- data ----------------------------------------------------------------------------


def workload_a(m: int) -> Problem:
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 5.0, m)
    truth = np.array([2.5, 1.3, 0.5])
    # Built in place, so making the data costs no more memory than holding it.
    y = np.multiply(x, -truth[1])
    np.exp(y, out=y)
    y *= truth[0]
    y += truth[2]
    noise = rng.standard_normal(m)
    noise *= 0.05
    y += noise
    del noise
    return Problem("A", f"A exp decay m={m:.0e}", x, y, np.array([1.0, 1.0, 0.0]), truth)


def workload_b(m: int = B_SIZE) -> Problem:
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 10.0, m)
    truth = np.array([4.0, 2.5, 0.4, 2.5, 5.0, 0.6, 3.0, 7.2, 0.5, 0.3])
    y = gaussians_np(x, truth) + 0.05 * rng.standard_normal(m)
    p0 = np.array([3.5, 2.4, 0.5, 2.0, 5.1, 0.5, 3.3, 7.0, 0.6, 0.0])
    return Problem("B", f"B 3 Gaussians m={m:.0e}", x, y, p0, truth)


def workload_c(batch: int = C_BATCH, m: int = C_POINTS) -> Problem:
    """Peaks with different heights, positions and widths, so fits converge at
    different iterations: the case a batched `while_loop` handles worst."""
    rng = np.random.default_rng(3)
    x = np.linspace(-5.0, 5.0, m)
    truth = np.stack(
        [
            rng.uniform(1.0, 3.0, batch),
            rng.uniform(-1.5, 1.5, batch),
            rng.uniform(0.4, 1.5, batch),
            rng.uniform(-0.2, 0.2, batch),
        ],
        axis=1,
    )
    y = np.stack([peak_np(x, t) for t in truth]) + 0.05 * rng.standard_normal((batch, m))
    p0 = np.array([2.0, 0.0, 1.0, 0.0])
    return Problem("C", f"C {batch} peaks x {m}", x, y, p0, truth)


def workload_e(fits: int = E_FITS, pixels: int = E_PIXELS) -> Problem:
    """Gpufit's benchmark: 2-D Gaussians on 5 x 5 pixels with Poisson-free noise."""
    rng = np.random.default_rng(5)
    grid = np.arange(pixels, dtype=np.float32)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    x = np.stack([u.ravel(), v.ravel()]).astype(np.float32)
    centre = (pixels - 1) / 2
    truth = np.stack(
        [
            np.full(fits, 10.0),
            centre + rng.uniform(-0.5, 0.5, fits),
            centre + rng.uniform(-0.5, 0.5, fits),
            np.full(fits, 1.0),
            np.full(fits, 1.0),
        ],
        axis=1,
    ).astype(np.float32)
    a, x0, y0, w, b = (truth[:, i : i + 1] for i in range(5))
    clean = a * np.exp(-((x[0] - x0) ** 2 + (x[1] - y0) ** 2) / (2 * w**2)) + b
    y = (clean + 0.5 * rng.standard_normal(clean.shape)).astype(np.float32)
    p0 = np.array([8.0, centre, centre, 1.2, 1.5], np.float32)
    return Problem("E", f"E {fits} 2-D Gaussians 5x5", x, y, p0, truth)


def nist_problems():
    """The NIST StRD problems (data in the shared folder), via the tests' loader."""
    tests = pathlib.Path(__file__).resolve().parents[1] / "tests"
    sys.path.insert(0, str(tests))
    try:
        import nist
    finally:
        sys.path.remove(str(tests))
    return nist.load_problems(), nist.log_relative_error


def parameter_error(params, truth) -> float:
    """Largest relative deviation from the true parameters (median over a batch)."""
    params, truth = np.asarray(params, float), np.asarray(truth, float)
    scale = np.maximum(np.abs(truth), 1e-12)
    errors = np.max(np.abs(params - truth) / scale, axis=-1)
    return float(np.median(errors))
