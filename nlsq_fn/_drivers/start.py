"""Where a fit starts, and the checks there: `p0` against the bounds, the start moved
strictly inside them (as SciPy's TRF; its dogbox starts at `p0`, possibly on a bound),
and the model's values at the start. Every front end and driver uses these, so each
rule and each message is written once."""

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .._evaluation.compiled import compiled
from .._problem.data import Data
from .._strategies.bounds import make_strictly_feasible
from .options import check_bounds_supported

if TYPE_CHECKING:  # `solver` builds its state with these checks
    from .solver import SolverState


def check_real_start(dtype, name: str = "p0") -> None:
    """The one message for a complex start (`p0`; SciPy's name `x0`)."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ValueError(f"`{name}` must be real numbers, got complex values.")


def strictly_inside(strategy, x0, lower, upper):
    """The flat start `x0` where `strategy` evaluates first: moved strictly inside the
    bounds for a strategy that starts there (TRF), else `x0` itself."""
    if strategy.supports_bounds and strategy.starts_strictly_inside:
        return make_strictly_feasible(x0, lower, upper)
    return x0


def start_point(state: "SolverState"):
    """The flat starting point of `state`'s fit (`strictly_inside` its bounds) and the
    function that shapes a flat point as the parameters."""
    x0, unravel = ravel_pytree(state.params)
    return strictly_inside(state.strategy, x0, state.lower, state.upper), unravel


def flat_parameter_names(params) -> list[str]:
    """A readable name for each entry of the flattened parameters (``['a', 'b[1]']``)."""
    names = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        base = jax.tree_util.keystr(path, simple=True, separator=".") or "p"
        size = int(np.size(leaf))
        if np.ndim(leaf) == 0:
            names.append(base)
        else:
            names.extend(f"{base}[{i}]" for i in range(size))
    return names


def _names_at(params, where) -> str:
    names = flat_parameter_names(params)
    return ", ".join(names[i] for i in np.flatnonzero(where))


def check_start_and_bounds(params, x0, lower, upper, strategy) -> None:
    """`init`'s checks of concrete bounds and start (flat NumPy arrays; `params` names
    the entries in the messages), shared by every front end that builds a fit's state."""
    if np.any(np.isnan(lower) | np.isnan(upper)):
        bad = _names_at(params, np.isnan(lower) | np.isnan(upper))
        raise ValueError(f"`bounds` contain NaN (for {bad}); use -inf / inf for none.")
    if np.any(lower >= upper):
        raise ValueError(
            "Each lower bound must be strictly less than its upper bound "
            f"(violated for {_names_at(params, lower >= upper)})."
        )
    if not np.all(np.isfinite(x0)):
        raise ValueError("`p0` contains NaN or inf.")
    if np.any((x0 < lower) | (x0 > upper)):
        bad = _names_at(params, (x0 < lower) | (x0 > upper))
        raise ValueError(
            f"`p0` is outside the bounds for {bad} (SciPy: Initial guess is outside "
            "of provided bounds)."
        )
    finite = bool(np.any(np.isfinite(lower)) or np.any(np.isfinite(upper)))
    check_bounds_supported(strategy, finite, "Solver")


def start_flags(model, data: Data, state: "SolverState"):
    """Traced: whether the model is finite at the start (at the counted points), and
    whether the cost there is (it may overflow). See `raise_for_start`."""
    x0, unravel = start_point(state)
    prediction = model(data.model_x, unravel(x0))
    finite = jnp.isfinite(prediction)
    if data.mask is not None:
        finite = finite | ~data.mask
    residual = data.weighted_residual(prediction)
    return jnp.all(finite), jnp.isfinite(0.5 * jnp.sum(jnp.square(residual)))


# One compiled program for `init`'s value checks (each eager `jnp` call would be one).
start_flags_compiled = compiled(start_flags)


def host_start_flags(prediction, data: Data):
    """`start_flags` of a model run on the host, from its values at the start."""
    prediction = np.asarray(prediction)
    counted = np.ones(prediction.shape, bool) if data.mask is None else np.asarray(data.mask)
    y = np.asarray(data.y)
    residual = np.where(counted, prediction, 0.0) - np.where(counted, y, 0.0)
    if data.sigma is not None:
        residual = residual / np.where(counted, np.asarray(data.sigma), 1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        cost = 0.5 * np.sum(np.square(np.where(counted, residual, 0.0)))
    return np.all(np.isfinite(prediction[counted])), np.isfinite(cost)


def raise_for_start(model_finite, cost_finite) -> None:
    """The errors of a model that is not finite at the start, or a cost that overflows
    there (flags from `start_flags`)."""
    if not model_finite:
        raise ValueError(
            "The model returns NaN or inf at p0; choose another starting point or check the model."
        )
    if not cost_finite:
        raise ValueError(
            "The cost (half the sum of squared residuals) overflows at p0: the "
            "residuals are too large for floating point; rescale `y` or `sigma`."
        )
