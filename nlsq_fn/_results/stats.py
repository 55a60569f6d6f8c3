"""Goodness-of-fit statistics, Student-t quantiles and delta-method bands.

Formulas (``n`` counted points, ``k`` parameters, ``dof = n - k``; ``r_i = (y_i - ŷ_i)
/ σ_i`` the weighted residuals, ``σ_i = 1`` without `sigma`), following lmfit:

- ``chisqr = Σ r_i²`` and ``redchi = chisqr / dof``;
- ``rmse = sqrt(Σ (y_i - ŷ_i)² / n)`` (unweighted, in the units of ``y``);
- ``r_squared = 1 - Σ (y_i - ŷ_i)² / Σ (y_i - ȳ)²`` (unweighted);
- ``aic = n ln(chisqr / n) + 2k`` and ``bic = n ln(chisqr / n) + k ln(n)``;
- parameter intervals ``p ± t_{(1+level)/2, dof} · stderr``;
- the fitted curve's variance by the delta method, ``g(x)ᵀ pcov g(x)`` with ``g`` the
  model's gradient in the parameters (exact, from JAX); the prediction variance adds
  the noise variance ``σ² · s²`` (``s² = redchi``, or 1 with ``absolute_sigma``).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from .._evaluation.compiled import compiled


@jax.jit
def _student_t_ppf(q, df):
    # For t > 0: P(T > t) = I_x(df/2, 1/2) / 2 with x = df / (df + t²), increasing in x;
    # bisect on log x (x spans many decades in the far tails) to machine precision.
    from jax.scipy.special import betainc  # imported on first use: `import nlsq_fn` stays light

    tail = jnp.where(q >= 0.5, 1 - q, q)
    a = 0.5 * df

    def halve(_, bracket):
        lo, hi = bracket
        mid = 0.5 * (lo + hi)
        too_large = 0.5 * betainc(a, 0.5, jnp.exp(mid)) > tail
        return jnp.where(too_large, lo, mid), jnp.where(too_large, mid, hi)

    lo, hi = jax.lax.fori_loop(0, 200, halve, (jnp.full_like(tail, -740.0), jnp.zeros_like(tail)))
    log_x = 0.5 * (lo + hi)
    t = jnp.sqrt(df * -jnp.expm1(log_x) / jnp.exp(log_x))
    return jnp.where(q >= 0.5, t, -t)


def student_t_ppf(q: Float[ArrayLike, "..."], df: Float[ArrayLike, "..."]) -> np.ndarray:
    """Quantile of Student's t distribution with `df` degrees of freedom (``df > 0``),
    computed in JAX by inverting the regularized incomplete beta function."""
    q, df = np.broadcast_arrays(np.asarray(q, float), np.asarray(df, float))
    if np.any((q <= 0) | (q >= 1)):
        raise ValueError("Quantile levels must lie strictly between 0 and 1.")
    if np.any(df <= 0):
        raise ValueError("Student's t needs positive degrees of freedom.")
    dtype = jnp.result_type(float)
    return np.asarray(_student_t_ppf(jnp.asarray(q, dtype), jnp.asarray(df, dtype)))


def two_sided_t(level: float, dof: int) -> float:
    """The multiplier ``t_{(1+level)/2, dof}`` of a two-sided interval."""
    if not 0 < level < 1:
        raise ValueError(f"The confidence level must lie in (0, 1), got {level}.")
    if dof <= 0:
        return float("inf")
    return float(student_t_ppf(0.5 * (1 + level), dof))


class FitSums(NamedTuple):
    """What the goodness-of-fit statistics need, summed over the counted points: from
    per-point arrays (`of_points`) or from a streamed fit's running sums (`of_moments`)."""

    n_points: float
    chisqr: float  # Σ r_i² (weighted)
    ss_res: float  # Σ (y_i - ŷ_i)²
    ss_tot: float  # Σ (y_i - ȳ)²

    @classmethod
    def of_points(cls, y, y_fit, weighted_residual) -> "FitSums":
        """The sums of NumPy arrays of the counted points."""
        y, y_fit = np.ravel(y), np.ravel(y_fit)
        return cls(
            n_points=float(y.size),
            chisqr=float(np.sum(np.square(weighted_residual))),
            ss_res=float(np.sum(np.square(y - y_fit))),
            ss_tot=float(np.sum(np.square(y - np.mean(y)))),
        )

    @classmethod
    def of_moments(cls, n_points, chisqr, ss_res, sum_y, sum_y2) -> "FitSums":
        """The sums of a fit that kept only running sums: ``Σ (y - ȳ)² = Σ y² - (Σ y)² / n``."""
        n = float(n_points)
        return cls(n, float(chisqr), float(ss_res), float(sum_y2) - float(sum_y) ** 2 / n)

    def statistics(self, n_params: int) -> dict:
        """``chisqr, redchi, rmse, r_squared, aic, bic`` by the formulas of the module
        docstring."""
        n, chisqr, ss_res, ss_tot = self
        dof = n - n_params
        tiny = np.finfo(float).tiny
        log_term = n * np.log(max(chisqr, tiny) / n)
        return dict(
            chisqr=chisqr,
            redchi=chisqr / dof if dof > 0 else float("inf"),
            rmse=float(np.sqrt(ss_res / n)),
            r_squared=1 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            aic=float(log_term + 2 * n_params),
            bic=float(log_term + np.log(n) * n_params),
        )


def goodness_of_fit(y, y_fit, weighted_residual, n_params: int) -> dict:
    """``chisqr, redchi, rmse, r_squared, aic, bic`` of NumPy arrays of the counted points."""
    return FitSums.of_points(y, y_fit, weighted_residual).statistics(n_params)


def correlation_from_covariance(pcov) -> np.ndarray:
    """``pcov_ij / sqrt(pcov_ii pcov_jj)`` (NaN where a variance is 0 or inf)."""
    pcov = np.asarray(pcov)
    std = np.sqrt(np.diag(pcov))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = pcov / np.outer(std, std)
    corr[~np.isfinite(corr)] = np.nan
    return corr


@compiled
def _curve_variance(model, x, popt, pcov):
    grad = jax.jacfwd(lambda p: jnp.ravel(model(x, p)))(popt)
    return jnp.einsum("ij,jk,ik->i", grad, pcov, grad)


def curve_variance(model, x, popt, pcov) -> np.ndarray:
    """Delta-method variance of ``model(x, popt)`` (flattened), exact derivatives."""
    dtype = jnp.result_type(float)
    x = jax.tree.map(lambda leaf: jnp.asarray(leaf), x)
    return np.asarray(_curve_variance(model, x, jnp.asarray(popt, dtype), jnp.asarray(pcov, dtype)))
