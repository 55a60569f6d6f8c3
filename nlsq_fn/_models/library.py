"""The ready-made models of `nlsq_fn.models` (peaks, baselines, decays, a logistic, a
damped oscillation) with their guesses from the data, and `sum_of_peaks`."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import wofz

from .base import Model, Sum

_SQRT_2PI = float(np.sqrt(2 * np.pi))
_FWHM_PER_SIGMA = float(2 * np.sqrt(2 * np.log(2)))


def _peak_features(x, y):
    """Centre, height above the baseline and full width at half maximum of the
    largest peak (the contiguous region beyond half height around the extremum). A dip
    (the minimum further from the median than the maximum) gives a negative height."""
    median = float(np.median(y))
    if median - np.min(y) > np.max(y) - median:
        center, height, fwhm = _peak_features(x, -y)
        return center, -height, fwhm
    top = int(np.argmax(y))
    low = float(np.min(y))
    height = float(y[top]) - low
    above = y > low + 0.5 * height
    left = top
    while left > 0 and above[left - 1]:
        left -= 1
    right = top
    while right < y.size - 1 and above[right + 1]:
        right += 1
    spacing = float(np.median(np.diff(x))) if x.size > 1 else 1.0
    fwhm = max(float(x[right] - x[left]), spacing)
    return float(x[top]), height, fwhm


class Constant(Model):
    """``c``."""

    base_names: ClassVar = ("c",)
    guess_order: ClassVar = 1

    def evaluate(self, x, c):
        return c * jnp.ones_like(x)

    def initial_guess(self, x, y):
        return {"c": np.mean(y)}


class Linear(Model):
    """``slope * x + intercept``."""

    base_names: ClassVar = ("slope", "intercept")
    guess_order: ClassVar = 1

    def evaluate(self, x, slope, intercept):
        return slope * x + intercept

    def initial_guess(self, x, y):
        slope, intercept = np.polyfit(x, y, 1)
        return {"slope": slope, "intercept": intercept}


class Polynomial(Model):
    """``c0 + c1 x + ... + c_degree x^degree``."""

    degree: int = eqx.field(default=2, static=True)
    guess_order: ClassVar = 1

    def __check_init__(self):
        if not 0 <= self.degree <= 20:
            raise ValueError(f"Polynomial degree must be in 0..20, got {self.degree}.")

    @property
    def names(self):
        return tuple(f"c{i}" for i in range(self.degree + 1))

    def evaluate(self, x, **coefficients):
        return jnp.polyval(jnp.stack([coefficients[n] for n in self.names[::-1]]), x)

    def initial_guess(self, x, y):
        return dict(zip(self.names, np.polyfit(x, y, self.degree)[::-1], strict=True))


class ExponentialDecay(Model):
    """``amplitude * exp(-x / decay) + offset``."""

    base_names: ClassVar = ("amplitude", "decay", "offset")

    def evaluate(self, x, amplitude, decay, offset):
        return amplitude * jnp.exp(-x / decay) + offset

    def initial_guess(self, x, y):
        # Put the offset a little beyond the far end, then fit a line to log|y - offset|.
        span = float(np.ptp(y)) or 1.0
        decreasing = np.mean(y[: max(1, y.size // 10)]) > np.mean(y[-max(1, y.size // 10) :])
        sign = 1.0 if decreasing else -1.0
        offset = (np.min(y) - 0.05 * span) if decreasing else (np.max(y) + 0.05 * span)
        slope, intercept = np.polyfit(x, np.log(sign * (y - offset)), 1)
        decay = -1 / slope if slope < 0 else float(np.ptp(x)) or 1.0
        return {"amplitude": sign * np.exp(intercept), "decay": decay, "offset": offset}


class PowerLaw(Model):
    """``amplitude * x ** exponent`` (for ``x > 0``)."""

    base_names: ClassVar = ("amplitude", "exponent")

    def evaluate(self, x, amplitude, exponent):
        return amplitude * x**exponent

    def initial_guess(self, x, y):
        keep = (x > 0) & (y != 0)
        sign = np.sign(np.median(y[keep]))
        keep &= np.sign(y) == sign
        exponent, intercept = np.polyfit(np.log(x[keep]), np.log(sign * y[keep]), 1)
        return {"amplitude": sign * np.exp(intercept), "exponent": exponent}


class Gaussian(Model):
    """``amplitude / (sigma sqrt(2π)) * exp(-(x - center)² / (2 sigma²))``;
    `amplitude` is the area, as in lmfit."""

    base_names: ClassVar = ("amplitude", "center", "sigma")

    def evaluate(self, x, amplitude, center, sigma):
        return amplitude / (_SQRT_2PI * sigma) * jnp.exp(-0.5 * ((x - center) / sigma) ** 2)

    def initial_guess(self, x, y):
        center, height, fwhm = _peak_features(x, y)
        sigma = fwhm / _FWHM_PER_SIGMA
        return {"amplitude": height * _SQRT_2PI * sigma, "center": center, "sigma": sigma}


class Lorentzian(Model):
    """``amplitude / π * sigma / ((x - center)² + sigma²)``; `amplitude` is the area,
    `sigma` the half width at half maximum."""

    base_names: ClassVar = ("amplitude", "center", "sigma")

    def evaluate(self, x, amplitude, center, sigma):
        return amplitude / jnp.pi * sigma / ((x - center) ** 2 + sigma**2)

    def initial_guess(self, x, y):
        center, height, fwhm = _peak_features(x, y)
        sigma = fwhm / 2
        return {"amplitude": height * np.pi * sigma, "center": center, "sigma": sigma}


def _voigt_profile(x, center, sigma, gamma):
    z = (x - center + 1j * gamma) / (sigma * np.sqrt(2.0))
    return jnp.real(wofz(z)) / (sigma * _SQRT_2PI)


class Voigt(Model):
    """``amplitude * Re[w(z)] / (sigma sqrt(2π))``, ``z = (x - center + i gamma) /
    (sigma sqrt 2)`` with the Faddeeva function `w` (`jax.scipy.special.wofz`): a
    Gaussian of width `sigma` convolved with a Lorentzian of half width `gamma`."""

    base_names: ClassVar = ("amplitude", "center", "sigma", "gamma")

    def evaluate(self, x, amplitude, center, sigma, gamma):
        return amplitude * _voigt_profile(x, center, sigma, gamma)

    def initial_guess(self, x, y):
        center, height, fwhm = _peak_features(x, y)
        # With gamma = sigma the Voigt FWHM is about 3.6 sigma (Olivero & Longbothum).
        sigma = fwhm / 3.6
        peak = float(_voigt_profile(0.0, 0.0, sigma, sigma))
        return {"amplitude": height / peak, "center": center, "sigma": sigma, "gamma": sigma}


class PseudoVoigt(Model):
    """``(1 - fraction) * Gaussian + fraction * Lorentzian`` of the same area and FWHM
    (``2 sigma``), as lmfit's PseudoVoigtModel."""

    base_names: ClassVar = ("amplitude", "center", "sigma", "fraction")

    def evaluate(self, x, amplitude, center, sigma, fraction):
        sigma_g = sigma / np.sqrt(2 * np.log(2))
        gauss = jnp.exp(-0.5 * ((x - center) / sigma_g) ** 2) / (_SQRT_2PI * sigma_g)
        lorentz = sigma / jnp.pi / ((x - center) ** 2 + sigma**2)
        return amplitude * ((1 - fraction) * gauss + fraction * lorentz)

    def initial_guess(self, x, y):
        center, height, fwhm = _peak_features(x, y)
        sigma = fwhm / 2
        sigma_g = sigma / np.sqrt(2 * np.log(2))
        peak = 0.5 / (_SQRT_2PI * sigma_g) + 0.5 / (np.pi * sigma)
        return {"amplitude": height / peak, "center": center, "sigma": sigma, "fraction": 0.5}


class Logistic4(Model):
    """Four-parameter logistic (dose–response): ``bottom + (top - bottom) / (1 +
    (x / ec50) ** hill)`` for ``x > 0``."""

    base_names: ClassVar = ("bottom", "top", "ec50", "hill")

    def evaluate(self, x, bottom, top, ec50, hill):
        return bottom + (top - bottom) / (1 + (x / ec50) ** hill)

    def initial_guess(self, x, y):
        keep = x > 0
        x, y = x[keep], y[keep]
        k = max(2, x.size // 10)
        top, bottom = float(np.mean(y[:k])), float(np.mean(y[-k:]))
        # Linearize: log((top - y) / (y - bottom)) = hill * (log x - log ec50).
        margin = 0.05 * abs(top - bottom)
        inside = (np.minimum(top, bottom) + margin < y) & (y < np.maximum(top, bottom) - margin)
        if np.sum(inside) >= 2:
            ratio = (top - y[inside]) / (y[inside] - bottom)
            hill, intercept = np.polyfit(np.log(x[inside]), np.log(ratio), 1)
            ec50 = float(np.exp(-intercept / hill)) if hill != 0 else float(np.median(x))
        else:
            hill, ec50 = 1.0, float(np.exp(np.mean(np.log(x))))
        return {"bottom": bottom, "top": top, "ec50": ec50, "hill": hill}


class DampedOscillation(Model):
    """``amplitude * exp(-x / decay) * cos(2π frequency x + phase) + offset``."""

    base_names: ClassVar = ("amplitude", "decay", "frequency", "phase", "offset")

    def evaluate(self, x, amplitude, decay, frequency, phase, offset):
        return amplitude * jnp.exp(-x / decay) * jnp.cos(2 * jnp.pi * frequency * x + phase) + (
            offset
        )

    def initial_guess(self, x, y):
        offset = float(np.mean(y))
        grid = np.linspace(x[0], x[-1], x.size)
        centred = np.interp(grid, x, y) - offset
        spectrum = np.abs(np.fft.rfft(centred))
        spectrum[0] = 0.0
        peak = int(np.argmax(spectrum))
        coarse = peak / (grid[-1] - grid[0]) * (x.size - 1) / x.size
        span = float(x[-1] - x[0]) or 1.0
        best = None
        # Linear least squares for amplitude and phase on a small grid of frequencies and
        # decay times around the spectral peak; keep the best.
        for frequency in coarse * np.linspace(0.8, 1.2, 21):
            for decay in span * np.array([0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 20.0]):
                envelope = np.exp(-(x - x[0]) / decay)
                basis = np.stack(
                    [
                        envelope * np.cos(2 * np.pi * frequency * x),
                        envelope * np.sin(2 * np.pi * frequency * x),
                        np.ones_like(x),
                    ],
                    axis=1,
                )
                coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
                error = float(np.sum((basis @ coef - y) ** 2))
                if best is None or error < best[0]:
                    best = (error, frequency, decay, coef)
        _, frequency, decay, (a, b, c) = best
        amplitude = np.hypot(a, b) * np.exp(x[0] / decay)
        return {
            "amplitude": amplitude,
            "decay": decay,
            "frequency": frequency,
            "phase": np.arctan2(-b, a),
            "offset": c,
        }


PEAK_SHAPES: dict[str, type[Model]] = {
    "gaussian": Gaussian,
    "lorentzian": Lorentzian,
    "voigt": Voigt,
    "pseudo_voigt": PseudoVoigt,
}


def sum_of_peaks(count: int, shape: str = "gaussian", baseline: Model | None = None):
    """``count`` peaks of one shape (prefixes ``p0_``, ``p1_``, ...) plus an optional
    baseline model; the guess finds the peaks one by one, tallest first."""
    if shape not in PEAK_SHAPES:
        raise ValueError(f"`shape` must be one of {sorted(PEAK_SHAPES)}, got {shape!r}.")
    if count < 1:
        raise ValueError("`count` must be at least 1.")
    components = [PEAK_SHAPES[shape](prefix=f"p{i}_") for i in range(count)]
    if baseline is not None:
        components.append(baseline)
    return Sum(tuple(components))
