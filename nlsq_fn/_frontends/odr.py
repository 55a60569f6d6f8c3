"""``odr``: orthogonal distance regression (errors in x and y), as `scipy.odr`.

Each point ``i`` gets its own correction ``δᵢ`` of ``xᵢ``, and the fit minimizes
``Σ ((f(xᵢ + δᵢ; β) - yᵢ) / σy,ᵢ)² + (δᵢ / σx,ᵢ)²``: a global fit in which every point is
a dataset of two residuals with one local parameter (its ``δᵢ``) and the model's
parameters ``β`` shared. The block engine (`nlsq_fn._drivers.block_linearize`) eliminates the
``δᵢ`` point by point, so the fit never forms the ``2m × (m + p)`` Jacobian nor, with
TRF, anything ``(m + p) × (m + p)``.
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import numpy as np

from .._drivers.block_linearize import GlobalSolution, global_solve
from .._drivers.block_stepwise import can_step_blocks, solve_blocks_stepwise
from .._drivers.odr_solve import as_odr_solution, odr_problem
from .._drivers.start import raise_for_start, start_flags
from .._evaluation.program_store import stored
from .._problem.conventions import vector_model
from .._results.global_fit_result import solution_attribute
from .._strategies.trf import TRF
from .._strategies.trust_region import STATUS_MESSAGES
from .global_fit_inputs import block_solver, flat_bounds_of

__all__ = ["ODRResult", "odr"]

_global_solve = eqx.filter_jit(global_solve)


@stored
def _read(p: int, data, fitted, absolute_sigma: bool):
    """The global fit read as an ODR fit, with `sd_beta` and `pcov`: one
    model-independent program (each eager `jnp` call would compile one)."""
    found = as_odr_solution(p, data, fitted)
    return found, found.sd_beta, found.pcov(absolute_sigma)


@dataclasses.dataclass(repr=False)
class ODRResult:
    """The result of `odr` (NumPy values), with `scipy.odr.Output`'s names: `beta`
    (= `popt`), `sd_beta` (= `perr`), `cov_beta` (the unscaled covariance, as SciPy's:
    ``sd_beta² = diag(cov_beta) · res_var``), `pcov` (``cov_beta · res_var``, or
    ``cov_beta`` with `absolute_sigma`), `delta` (the x corrections), `eps` (the y
    residuals ``f(x + δ) - y``), `xplus` (``x + δ``), `y` (``f(x + δ)``), `res_var`
    (the weighted sum of squares over ``m - p``), `sum_square`; `params` and `perr`
    by name; `solution`, the fit's `GlobalSolution` (NumPy values: ``θ = [β, δ]``),
    whose `cost`, `nfev`, `njev`, `nit`, `status` and `success` the result reports as
    its own; `message`."""

    names: tuple[str, ...]
    beta: np.ndarray
    sd_beta: np.ndarray
    cov_beta: np.ndarray
    pcov: np.ndarray
    delta: np.ndarray
    eps: np.ndarray
    xplus: np.ndarray
    y: np.ndarray
    res_var: float
    sum_square: float
    solution: GlobalSolution

    def __getattr__(self, name: str):
        return solution_attribute(self, name)

    popt = property(lambda self: self.beta)
    perr = property(lambda self: self.sd_beta)

    @property
    def params(self) -> dict:
        return dict(zip(self.names, self.beta.tolist(), strict=True))

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self.status]

    def __repr__(self) -> str:
        values = ", ".join(
            f"{name}={value:.4g}±{err:.2g}"
            for name, value, err in zip(self.names, self.beta, self.sd_beta, strict=True)
        )
        return f"ODRResult({values}; res_var={self.res_var:.4g}, success={self.success})"


def _check_points(x, y, sigma_x, sigma_y):
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.size != y.size or x.size == 0:
        raise ValueError(
            f"odr needs 1-D `x` and `y` of the same length; got shapes {x.shape} and {y.shape}."
        )
    sigmas = []
    for name, sigma in (("sigma_x", sigma_x), ("sigma_y", sigma_y)):
        sigma = np.ones(1) if sigma is None else np.asarray(sigma, dtype=float)
        if sigma.size not in (1, x.size):
            raise ValueError(f"`{name}` has {sigma.size} values but there are {x.size} points.")
        sigma = np.broadcast_to(sigma.ravel(), x.shape)
        if not np.all(np.isfinite(sigma) & (sigma > 0)):
            raise ValueError(f"`{name}` must be finite and strictly positive.")
        sigmas.append(sigma)
    return x, y, *sigmas


def odr(
    model: Callable,
    x,
    y,
    p0,
    *,
    sigma_x=None,
    sigma_y=None,
    bounds=(-np.inf, np.inf),
    loss="linear",
    f_scale: float = 1.0,
    absolute_sigma: bool = False,
    method: str = "trf",
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-10,
    max_nfev: int | None = None,
    param_style: str | None = None,
) -> ODRResult:
    """Orthogonal distance regression: fit ``y ≈ model(x + δ, β)`` with errors in both
    `x` (standard deviations `sigma_x`) and `y` (`sigma_y`), as `scipy.odr` (explicit
    models): minimizes ``Σ ((model(xᵢ + δᵢ) - yᵢ) / σy,ᵢ)² + (δᵢ / σx,ᵢ)²`` over ``β``
    and the corrections ``δ``.

    `model` is written as for `curve_fit` (``f(x, a, b)``, ``model(x, params)`` or an
    `nlsq_fn.models` model) and must be pointwise (it is evaluated one point at a time);
    `p0` gives ``β``'s start (the ``δ`` start at 0); `bounds` bound ``β`` (a pair or a
    dict by name); `loss` is a robust loss on all residuals (those of ``y`` and of
    ``δ``). `sigma_x` / `sigma_y` are scalars or one per point (default 1). The
    tolerances default tighter than `curve_fit`'s (ODRPACK converges to its own, tight
    ones). Returns an `ODRResult`.

    With ``method="trf"`` (the default) each step eliminates the ``δᵢ`` point by point
    (`BlockTRF`): linear in the number of points. ``"dogbox"`` and ``"lm"`` factor the
    ``(m + p) × (m + p)`` matrix: for up to a few hundred points.
    """
    x, y, sigma_x, sigma_y = _check_points(x, y, sigma_x, sigma_y)
    beta_model, names = vector_model(model, p0, param_style)
    if isinstance(p0, dict):
        missing = [name for name in names if name not in p0]
        if missing or set(p0) - set(names):
            raise ValueError(
                f"`p0` must name each of the model's parameters {list(names)}; missing: "
                f"{missing}, unknown: {sorted(set(p0) - set(names))}."
            )
        p0 = [p0[name] for name in names]
    beta0 = np.asarray(p0, dtype=float).ravel()
    names = tuple(names) if names is not None else tuple(f"p{i}" for i in range(beta0.size))
    if len(names) != beta0.size:
        raise ValueError(f"`p0` has {beta0.size} values; the model has {list(names)}.")
    lower, upper = flat_bounds_of(bounds, names, names, (), 1)  # β's; δ is free
    solver = block_solver(
        method, loss, f_scale, lower, upper, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev
    )
    # `odr_solve` split in two: the problem is built (and checked) here, on the host;
    # with TRF its fit is driven step by step, as `global_fit`'s (only the model's part
    # compiles; the start is checked by the first evaluation), else compiled whole.
    stepwise = type(solver.strategy) is TRF
    problem = odr_problem(
        beta_model, x, y, beta0, solver, sigma_x=sigma_x, sigma_y=sigma_y, check_start=not stepwise
    )
    if stepwise and can_step_blocks(problem[1], problem[2]):
        fitted = solve_blocks_stepwise(*problem, check_start=True)
    else:
        if stepwise:  # (not checked by `odr_problem`)
            raise_for_start(*start_flags(*problem))
        fitted = _global_solve(*problem)
    found, sd_beta, pcov = jax.tree.map(
        np.asarray, _read(beta0.size, problem[1], fitted, absolute_sigma)
    )
    res_var = float(found.res_var)
    return ODRResult(
        names=names,
        beta=found.beta,
        sd_beta=sd_beta,
        cov_beta=found.cov_beta,
        pcov=pcov,
        delta=found.delta,
        eps=found.eps,
        xplus=x + found.delta,
        y=y + found.eps,
        res_var=res_var,
        sum_square=float(found.sum_square),
        solution=found.solution,
    )
