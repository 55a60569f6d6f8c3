"""Profile-likelihood confidence intervals (lmfit's ``conf_interval``, MINUIT's MINOS).

The profile of parameter ``j`` is ``χ²(v) = min over the others of χ²(p | p_j = v)``.
Its interval is where ``χ²(v) - χ²_min`` stays below a threshold: ``t²(level, dof)``
times the residual variance ``χ²_min / dof`` (an F(1, dof) test, lmfit's default),
or ``z²(level)`` with `absolute_sigma` (the χ²(1) likelihood-ratio test). On a linear
model ``χ²(v) - χ²_min = (v - p̂_j)² / C_jj`` (``C`` the unscaled covariance), so both
give exactly the covariance interval ``p̂_j ± t · perr_j``; on a nonlinear one the
interval follows the curvature the covariance ignores.

The profile is computed as one batched fit (`jax.vmap` of `solve` over the held value)
on a grid, and each end refined by batched regula falsi steps on the bracketing grid
points: both ends in one batch of two fits per step, never a Python loop of fits.

The profile fits are the original fit's with one more parameter held: the same bounds
on the others, the same loss (with a robust loss ``χ²`` is twice the robust cost, the
objective actually minimized, and the same test is applied to it), the same fixed
values and ties (`StructuredModel` with the profiled parameter added to the fixed ones).
A bound on the profiled parameter ends its grid: where the profile stays below the
threshold up to the bound, that end of the interval is the bound itself, flagged
(`lower_at_bound` / `upper_at_bound`) and warned about. (lmfit's `conf_interval`
reports ``∓inf`` there; MINUIT's MINOS the limit, flagged, as here: the interval is the
set of allowed values the test does not reject.)
"""

import dataclasses
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._drivers.solve import solve
from .._drivers.solver import Solver, init
from .._evaluation.precision import full_precision
from .._problem.data import Data
from .._problem.loss import Linear
from .._results.stats import two_sided_t
from .curve_fit import OptimizeWarning
from .structured import StructuredModel

__all__ = ["ProfileInterval", "profile_interval"]


@dataclasses.dataclass
class ProfileInterval:
    """The profile-likelihood interval of one parameter: `lower`, `upper` (NaN where
    the profile never crosses the threshold within the searched range; the bound where
    it stays below it up to the parameter's bound, then `lower_at_bound` /
    `upper_at_bound` is True), `best` (the fitted value), `level`; the profile itself
    for plots: `grid` (held values) and `chi2` (the minimum of ``Σ ((f - y) / σ)²``
    there, twice the robust cost with a robust loss), `chi2_min` and `threshold` (the
    ``χ²`` at which the interval ends)."""

    name: str
    best: float
    lower: float
    upper: float
    level: float
    grid: np.ndarray
    chi2: np.ndarray
    chi2_min: float
    threshold: float
    lower_at_bound: bool = False
    upper_at_bound: bool = False

    def __iter__(self):  # ``lower, upper = profile_interval(...)``
        return iter((self.lower, self.upper))


def _held(base: StructuredModel, name: str, value) -> StructuredModel:
    """`base` with parameter `name` (a free one) held at `value` too."""
    fixed_values = jnp.concatenate([jnp.asarray(base.fixed_values, value.dtype), value[None]])
    return StructuredModel(
        base.full_model,
        base.names,
        tuple(other for other in base.free if other != name),
        base.fixed_names + (name,),
        fixed_values,
        base.tie_names,
        base.tie_functions,
    )


@eqx.filter_jit
@full_precision
def _profile(base, name, values, data, free0, solver):
    """``χ²`` of the fits with parameter `name` held at each of `values` (vmapped)."""

    def one(value):
        held = _held(base, name, value)
        if free0.size == 0:  # nothing left to fit: the objective itself
            return 2 * solver.loss.cost(data.weighted_residual(held(data.model_x, free0)))
        solution = solve(held, data, init(held, data, free0, solver))
        return 2 * solution.cost

    return jax.vmap(one)(values)


def _structure(result) -> StructuredModel:
    """The fit's `StructuredModel` (its fixed values and ties), or one with every
    parameter free."""
    structure = getattr(result, "structure", None)
    if structure is not None:
        return structure
    names = tuple(result.names)
    return StructuredModel(result.model, names, names, (), np.zeros(0), (), ())


def _grid(best, perr, width, n_grid, lower, upper) -> np.ndarray:
    """`n_grid` values over ``best ± width · perr``, each side cut at its bound."""
    middle = n_grid // 2
    low = max(best - width * perr, lower)
    high = min(best + width * perr, upper)
    return np.concatenate(
        [np.linspace(low, best, middle + 1), np.linspace(best, high, n_grid - middle)[1:]]
    )


def profile_interval(
    result,
    name: str | int,
    level: float = 0.95,
    *,
    n_grid: int = 21,
    width: float = 4.0,
    refine: int = 3,
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-10,
) -> ProfileInterval:
    """The profile-likelihood confidence interval of parameter `name` (or its index) of
    a `curve_fit` / `CurveFit` result: lmfit's ``conf_interval(minimizer, result,
    p_names=[name], sigmas=[level])`` as one function of the result, which holds the
    model and the data. The profile fits keep the fit's bounds, loss, fixed values and
    ties (`name` must be a free parameter).

    The profile is fitted on `n_grid` held values over ``best ± width · perr`` (one
    batched fit; a side ends at the parameter's bound if that is nearer), then each end
    refined by `refine` batched regula falsi steps. Where the profile stays below the
    threshold up to a bound, that end is the bound (flagged, with an `OptimizeWarning`).
    Returns a `ProfileInterval` (unpacks as ``lower, upper``)."""
    names = tuple(result.names)
    index = names.index(name) if isinstance(name, str) else int(name)
    if not 0 <= index < len(names):
        raise ValueError(f"`name` must be one of the parameters {list(names)}, got {name!r}.")
    name = names[index]
    base = _structure(result)
    if name not in base.free:
        kind = "fixed" if name in base.fixed_names else "tied"
        raise ValueError(
            f"Parameter {name!r} is {kind} in this fit: profile one of the free parameters "
            f"{list(base.free)}."
        )
    popt = np.asarray(result.popt, float)
    perr = float(np.asarray(result.perr)[index])
    if not np.isfinite(perr) or perr <= 0:
        raise ValueError(f"The standard error of {name!r} is {perr}: no scale for a grid.")
    data = Data(result.xdata, result.ydata, sigma=result.sigma)
    dof = int(result.dof)
    chi2_min = 2 * float(result.cost)
    if result.absolute_sigma:  # the χ²(1) quantile: z²
        threshold = chi2_min + float(jax.scipy.special.ndtri(0.5 + level / 2)) ** 2
    else:
        threshold = chi2_min + two_sided_t(level, dof) ** 2 * chi2_min / dof
    lower = np.asarray(getattr(result, "lower", np.full(len(names), -np.inf)), float)
    upper = np.asarray(getattr(result, "upper", np.full(len(names), np.inf)), float)
    others = [names.index(other) for other in base.free if other != name]
    free0 = popt[others]
    bounded = bool(np.any(np.isfinite(lower[others])) or np.any(np.isfinite(upper[others])))
    solver = Solver(
        loss=getattr(result, "loss_function", None) or Linear(),
        bounds=(lower[others], upper[others]) if bounded else None,
        ftol=ftol,
        xtol=xtol,
        gtol=gtol,
    )

    def profile(values):
        values = jnp.asarray(values, popt.dtype)
        return np.asarray(_profile(base, name, values, data, free0, solver))

    best = popt[index]
    grid = _grid(best, perr, width, n_grid, lower[index], upper[index])
    chi2 = profile(grid)
    # The brackets: the last grid point inside the threshold and the first outside, on
    # each side of the best value; a side that ends at its bound still inside, the bound.
    ends: list[tuple | None] = []
    found = [np.nan, np.nan]
    at_bound = [False, False]
    middle = n_grid // 2
    for i, (side, bound) in enumerate(((-1, lower[index]), (1, upper[index]))):
        order = np.arange(middle, -1, -1) if side < 0 else np.arange(middle, n_grid)
        outside = np.nonzero(chi2[order] > threshold)[0]
        if outside.size:
            j = order[outside[0]]
            ends.append((grid[j - side], chi2[j - side], grid[j], chi2[j]))
            continue
        ends.append(None)
        if grid[order[-1]] == bound:
            found[i], at_bound[i] = float(bound), True
            warnings.warn(
                f"The profile of {name!r} stays below the threshold up to its "
                f"{'lower' if side < 0 else 'upper'} bound {bound:g}: that end of the "
                "interval is the bound.",
                OptimizeWarning,
                stacklevel=2,
            )

    # Regula falsi on h(v) = sqrt(χ²(v) - χ²_min) - sqrt(threshold - χ²_min): linear in v
    # on a linear model (one step is exact), nearly so near the minimum of any other.
    def h(chi2_values):
        return np.sqrt(np.maximum(chi2_values - chi2_min, 0.0)) - np.sqrt(threshold - chi2_min)

    live = [i for i, end in enumerate(ends) if end is not None]
    brackets = np.array([end for end in ends if end is not None])  # (sides, 4)
    if live:
        inner, h_inner = brackets[:, 0], h(brackets[:, 1])
        outer, h_outer = brackets[:, 2], h(brackets[:, 3])
        for _ in range(refine):  # both ends in one batch of fits
            guess = inner - h_inner * (outer - inner) / (h_outer - h_inner)
            h_guess = h(profile(guess))
            below = h_guess <= 0
            inner, h_inner = np.where(below, guess, inner), np.where(below, h_guess, h_inner)
            outer, h_outer = np.where(below, outer, guess), np.where(below, h_outer, h_guess)
        final = inner - h_inner * (outer - inner) / (h_outer - h_inner)
        for i, value in zip(live, final, strict=True):
            found[i] = float(value)
    return ProfileInterval(
        name=name,
        best=float(best),
        lower=found[0],
        upper=found[1],
        level=level,
        grid=grid,
        chi2=chi2,
        chi2_min=chi2_min,
        threshold=threshold,
        lower_at_bound=at_bound[0],
        upper_at_bound=at_bound[1],
    )
