"""SciPy's and NLSQ's option names resolved to the modules a `Solver` holds.

Every front end turns ``method="trf"``, ``loss="huber"`` and its bounds into strategy and
loss modules here, so that each rule, and each message a wrong option gets, is written
once: which strategy a name means, whether any bound is finite, and the error for bounds
given to a strategy that takes none (in the words of the caller's SciPy counterpart,
which tests and users match).
"""

import functools

import jax
import numpy as np

from .._problem.loss import AbstractLoss, as_loss
from .._strategies.dogbox import Dogbox
from .._strategies.levenberg_marquardt import LevenbergMarquardt
from .._strategies.strategy import AbstractStrategy
from .._strategies.trf import TRF

METHODS = ("trf", "dogbox", "lm")

# The error for bounds given to a strategy without them, by caller: SciPy's
# `least_squares` and `curve_fit` word it differently, and a `CurveFit` made without
# bounds chose 'lm' itself.
_NO_BOUNDS = {
    "least_squares": "Method 'lm' doesn't support bounds.",
    "curve_fit": (
        "Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead."
    ),
    "CurveFit": (
        "This CurveFit uses method='lm', which doesn't support bounds; create it with "
        "method='trf' (or with bounds)."
    ),
    "Solver": "{name} does not support bounds; use TRF().",
}


def check_bounds_supported(strategy: AbstractStrategy | str, bounded: bool, caller: str) -> None:
    """Raise for finite bounds given to a strategy that takes none (Levenberg–Marquardt),
    a module or SciPy's `method` name; `caller` (a key of `_NO_BOUNDS`) chooses SciPy's
    wording."""
    if isinstance(strategy, str):
        supported, name = strategy != "lm", strategy
    else:
        supported, name = strategy.supports_bounds, type(strategy).__name__
    if bounded and not supported:
        raise ValueError(_NO_BOUNDS[caller].format(name=name))


@functools.cache
def _default_strategy(method: str) -> AbstractStrategy:
    # One immutable module per name: building one costs more than a small refit's checks.
    return {"trf": TRF, "dogbox": Dogbox, "lm": LevenbergMarquardt}[method]()


def strategy_for(method: str, has_bounds: bool) -> AbstractStrategy:
    """The strategy SciPy's ``method`` names (its bounds checked against it)."""
    if method not in METHODS:
        raise ValueError(f"`method` must be 'trf', 'dogbox' or 'lm', got {method!r}.")
    strategy = _default_strategy(method)
    check_bounds_supported(strategy, has_bounds, "least_squares")
    return strategy


def as_strategy(strategy) -> AbstractStrategy:
    """A strategy module, or SciPy's name of one ("trf", "dogbox", "lm")."""
    if isinstance(strategy, AbstractStrategy):
        return strategy
    if isinstance(strategy, str) and strategy in METHODS:
        return strategy_for(strategy, has_bounds=False)
    raise ValueError(
        "`strategy` must be TRF(), Dogbox(), LevenbergMarquardt() or 'trf' / 'dogbox' / "
        f"'lm', got {strategy!r}."
    )


def as_loss_module(loss) -> AbstractLoss:
    """A loss module, or SciPy's name of one ("huber", ...) with ``f_scale=1``."""
    if isinstance(loss, str):
        return as_loss(loss)
    if not isinstance(loss, AbstractLoss):
        raise TypeError(f"`loss` must be an AbstractLoss or a loss name, got {loss!r}.")
    return loss


def has_finite_bounds(bounds) -> bool:
    """Whether any bound is finite; a traced bound (under jit / vmap) may be."""
    return any(
        isinstance(b, jax.core.Tracer) or np.any(np.isfinite(np.asarray(b, dtype=float)))
        for b in jax.tree.leaves(bounds)
    )
