"""NLSQ's function library: plain ``f(x, a, b, ...)`` functions in NLSQ's
parameterisations, each with ``.estimate_p0(xdata, ydata)`` (used by
``curve_fit(f, x, y, p0="auto")``) and ``.bounds()``. Available as ``nf.models.linear``,
``nf.models.exponential_decay``, ... The starting values come from the guesses of
`nf.models`' classes, converted to NLSQ's parameters (`nf.models.Gaussian`'s amplitude
is an area, NLSQ's `gaussian` has a height; its `ExponentialDecay` a time constant,
`exponential_decay` a rate)."""

import math

import jax.numpy as jnp
import numpy as np

from . import library as _model_library

INF = np.inf


def _library_function(func, estimate_p0, lower, upper):
    func.estimate_p0 = estimate_p0
    func.bounds = lambda: (list(lower), list(upper))
    return func


def _guess(model, xdata, ydata) -> dict:
    return model.guess(np.asarray(xdata, float), np.asarray(ydata, float))


def linear(x, a, b):
    """``a * x + b``."""
    return a * x + b


def exponential_decay(x, a, b, c):
    """``a * exp(-b * x) + c`` (`b` a rate)."""
    return a * jnp.exp(-b * x) + c


def exponential_growth(x, a, b, c):
    """``a * exp(b * x) + c``."""
    return a * jnp.exp(b * x) + c


def gaussian(x, amp, mu, sigma):
    """``amp * exp(-(x - mu)² / (2 sigma²))`` (`amp` the height)."""
    return amp * jnp.exp(-((x - mu) ** 2) / (2 * sigma**2))


def lorentzian(x, amp, x0, gamma):
    """``amp / (1 + ((x - x0) / gamma)²)`` (`amp` the height, `gamma` the HWHM)."""
    return amp / (1 + ((x - x0) / gamma) ** 2)


def sigmoid(x, L, x0, k, b):  # noqa: N803 - NLSQ's parameter name
    """``L / (1 + exp(-k (x - x0))) + b``."""
    return L / (1 + jnp.exp(-k * (x - x0))) + b


def power_law(x, a, b):
    """``a * x ** b``."""
    return a * jnp.power(x, b)


def _linear_p0(xdata, ydata):
    g = _guess(_model_library.Linear(), xdata, ydata)
    return [float(g["slope"]), float(g["intercept"])]


def _decay_p0(xdata, ydata):
    g = _guess(_model_library.ExponentialDecay(), xdata, ydata)
    return [float(g["amplitude"]), 1.0 / float(g["decay"]), float(g["offset"])]


def _growth_p0(xdata, ydata):
    # a exp(b x) + c is a decay in -x: a exp(-(-x) / tau) + c with b = 1 / tau.
    g = _guess(_model_library.ExponentialDecay(), -np.asarray(xdata, float), ydata)
    return [float(g["amplitude"]), 1.0 / float(g["decay"]), float(g["offset"])]


def _gaussian_p0(xdata, ydata):
    g = _guess(_model_library.Gaussian(), xdata, ydata)
    height = g["amplitude"] / (math.sqrt(2 * math.pi) * g["sigma"])
    return [float(height), float(g["center"]), float(g["sigma"])]


def _lorentzian_p0(xdata, ydata):
    g = _guess(_model_library.Lorentzian(), xdata, ydata)
    height = g["amplitude"] / (math.pi * g["sigma"])
    return [float(height), float(g["center"]), float(g["sigma"])]


def _sigmoid_p0(xdata, ydata):
    """Plateaus from the extremes, the midpoint where y crosses halfway, the steepness
    from the x range (NLSQ's estimate)."""
    xdata, ydata = np.asarray(xdata, float), np.asarray(ydata, float)
    low, high = float(np.min(ydata)), float(np.max(ydata))
    x0 = float(xdata[np.argmin(np.abs(ydata - (low + high) / 2))])
    span = float(np.ptp(xdata))
    return [high - low, x0, 1.0 / span if span > 0 else 1.0, low]


def _power_law_p0(xdata, ydata):
    g = _guess(_model_library.PowerLaw(), xdata, ydata)
    return [float(g["amplitude"]), float(g["exponent"])]


def polynomial(degree: int):
    """``c0 x^degree + c1 x^(degree-1) + ... + c_degree`` (highest power first, as
    `numpy.polyval`), a function of ``(x, *coeffs)``."""
    if int(degree) != degree or degree < 0:
        raise ValueError(f"`degree` must be a non-negative integer, got {degree!r}.")
    degree = int(degree)

    def poly(x, *coeffs):
        if len(coeffs) != degree + 1:
            raise ValueError(f"Expected {degree + 1} coefficients, got {len(coeffs)}")
        return jnp.polyval(jnp.array(coeffs), x)

    def estimate_p0(xdata, ydata):
        g = _guess(_model_library.Polynomial(degree=degree), xdata, ydata)
        return [float(g[f"c{i}"]) for i in range(degree, -1, -1)]

    poly.__name__ = f"polynomial_degree_{degree}"
    poly.__doc__ = (
        f"Polynomial of degree {degree}: c0 x^{degree} + ... + c{degree} "
        f"(coefficients highest power first)."
    )
    return _library_function(poly, estimate_p0, [-INF] * (degree + 1), [INF] * (degree + 1))


_library_function(linear, _linear_p0, [-INF, -INF], [INF, INF])
_library_function(exponential_decay, _decay_p0, [-INF, 0, -INF], [INF, INF, INF])
_library_function(exponential_growth, _growth_p0, [0, 0, -INF], [INF, INF, INF])
_library_function(gaussian, _gaussian_p0, [0, -INF, 0], [INF, INF, INF])
_library_function(lorentzian, _lorentzian_p0, [0, -INF, 0], [INF, INF, INF])
_library_function(sigmoid, _sigmoid_p0, [0, -INF, 0, -INF], [INF, INF, INF, INF])
_library_function(power_law, _power_law_p0, [0, -INF], [INF, INF])
