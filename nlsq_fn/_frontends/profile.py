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
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._drivers.solve import solve
from .._drivers.solver import Solver, init
from .._problem.data import Data
from .._results.stats import two_sided_t

__all__ = ["ProfileInterval", "profile_interval"]


class HeldModel(eqx.Module):
    """``model(x, free)`` with parameter `index` held at `value` (an array field: a batch
    of held values is a `vmap` over it, one compiled program)."""

    model: Callable = eqx.field(static=True)
    index: int = eqx.field(static=True)
    value: Float[Array, ""]

    def __call__(self, x, free):
        params = jnp.concatenate([free[: self.index], self.value[None], free[self.index :]])
        return self.model(x, params)


@dataclasses.dataclass
class ProfileInterval:
    """The profile-likelihood interval of one parameter: `lower`, `upper` (NaN where
    the profile never crosses the threshold within the searched range), `best` (the
    fitted value), `level`; the profile itself for plots: `grid` (held values) and `chi2`
    (the minimum of ``Σ ((f - y) / σ)²`` there), `chi2_min` and `threshold` (the
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

    def __iter__(self):  # ``lower, upper = profile_interval(...)``
        return iter((self.lower, self.upper))


@eqx.filter_jit
def _profile(model, index, values, data, free0, solver):
    """``χ²`` of the fits with parameter `index` held at each of `values` (vmapped)."""

    def one(value):
        held = HeldModel(model, index, value)
        solution = solve(held, data, init(held, data, free0, solver))
        return 2 * solution.cost

    return jax.vmap(one)(values)


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
    a `curve_fit` / `CurveFit` result (unbounded, linear loss): lmfit's
    ``conf_interval(minimizer, result, p_names=[name], sigmas=[level])`` as one function
    of the result, which holds the model and the data.

    The profile is fitted on `n_grid` held values over ``best ± width · perr`` (one
    batched fit), then each end refined by `refine` batched regula falsi steps. Returns
    a `ProfileInterval` (unpacks as ``lower, upper``)."""
    names = tuple(result.names)
    index = names.index(name) if isinstance(name, str) else int(name)
    if not 0 <= index < len(names):
        raise ValueError(f"`name` must be one of the parameters {list(names)}, got {name!r}.")
    if getattr(result, "fixed", ()) or getattr(result, "tied", ()):
        raise ValueError("profile_interval does not support fits with fixed or tied parameters.")
    popt = np.asarray(result.popt, float)
    perr = float(np.asarray(result.perr)[index])
    if not np.isfinite(perr) or perr <= 0:
        raise ValueError(f"The standard error of {names[index]!r} is {perr}: no scale for a grid.")
    data = Data(result.xdata, result.ydata, sigma=result.sigma)
    dof = int(result.dof)
    chi2_min = 2 * float(result.cost)
    if result.absolute_sigma:  # the χ²(1) quantile: z²
        threshold = chi2_min + float(jax.scipy.special.ndtri(0.5 + level / 2)) ** 2
    else:
        threshold = chi2_min + two_sided_t(level, dof) ** 2 * chi2_min / dof
    free0 = np.delete(popt, index)
    solver = Solver(ftol=ftol, xtol=xtol, gtol=gtol)

    def profile(values):
        values = jnp.asarray(values, popt.dtype)
        return np.asarray(_profile(result.model, index, values, data, free0, solver))

    best = popt[index]
    grid = best + perr * np.linspace(-width, width, n_grid)
    chi2 = profile(grid)
    # The brackets: the last grid point inside the threshold and the first outside, on
    # each side of the best value.
    ends: list[tuple | None] = []
    middle = n_grid // 2
    for side in (-1, 1):
        order = np.arange(middle, -1, -1) if side < 0 else np.arange(middle, n_grid)
        outside = np.nonzero(chi2[order] > threshold)[0]
        if outside.size == 0:
            ends.append(None)
        else:
            j = order[outside[0]]
            ends.append((grid[j - side], chi2[j - side], grid[j], chi2[j]))

    # Regula falsi on h(v) = sqrt(χ²(v) - χ²_min) - sqrt(threshold - χ²_min): linear in v
    # on a linear model (one step is exact), nearly so near the minimum of any other.
    def h(chi2_values):
        return np.sqrt(np.maximum(chi2_values - chi2_min, 0.0)) - np.sqrt(threshold - chi2_min)

    found = [np.nan, np.nan]
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
        name=names[index],
        best=float(best),
        lower=found[0],
        upper=found[1],
        level=level,
        grid=grid,
        chi2=chi2,
        chi2_min=chi2_min,
        threshold=threshold,
    )
