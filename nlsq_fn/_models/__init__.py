"""Ready-made models with named parameters and initial guesses from the data.

Each model is called as ``model(x, params)`` with ``params`` a dict of its
`param_names` (so it works with `init`/`solve` directly), and ``model.guess(x, y)``
returns such a dict estimated from the data. A `prefix` renames the parameters, and
``+`` sums models, as in lmfit::

    model = nf.models.Gaussian(prefix="g1_") + nf.models.Gaussian(prefix="g2_") \\
        + nf.models.Constant()
    result = nf.CurveFit(model, x, y).fit()        # p0 from model.guess(x, y)

Models are `equinox.Module`s holding only static configuration, so equal models hash
equal and share compiled fits. Guesses assume a 1-D `x` and work in NumPy.
"""

# This module is the namespace `nlsq_fn.models`: the base classes (`_models.base`), the
# library (`_models.library`) and NLSQ's plain functions (`_models.functions`).
from .base import Function as Function, Model as Model, Sum as Sum
from .functions import (
    exponential_decay as exponential_decay,
    exponential_growth as exponential_growth,
    gaussian as gaussian,
    linear as linear,
    lorentzian as lorentzian,
    polynomial as polynomial,
    power_law as power_law,
    sigmoid as sigmoid,
)
from .library import (
    PEAK_SHAPES as PEAK_SHAPES,
    Constant as Constant,
    DampedOscillation as DampedOscillation,
    ExponentialDecay as ExponentialDecay,
    Gaussian as Gaussian,
    Linear as Linear,
    Logistic4 as Logistic4,
    Lorentzian as Lorentzian,
    Polynomial as Polynomial,
    PowerLaw as PowerLaw,
    PseudoVoigt as PseudoVoigt,
    Voigt as Voigt,
    sum_of_peaks as sum_of_peaks,
)

__all__ = [
    "Model",
    "Sum",
    "Constant",
    "Linear",
    "Polynomial",
    "ExponentialDecay",
    "PowerLaw",
    "Gaussian",
    "Lorentzian",
    "Voigt",
    "PseudoVoigt",
    "Logistic4",
    "DampedOscillation",
    "Function",
    "PEAK_SHAPES",
    "sum_of_peaks",
    "exponential_decay",
    "exponential_growth",
    "gaussian",
    "linear",
    "lorentzian",
    "polynomial",
    "power_law",
    "sigmoid",
]
