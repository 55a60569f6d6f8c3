"""`GlobalFitResult`: a global fit's parameters and uncertainties by name, shared ones
as scalars and local ones as arrays over the datasets."""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import numpy as np

from .._strategies.block_arrow import BlockCovariance
from .._strategies.trust_region import STATUS_MESSAGES
from .solution import Solution

__all__ = ["GlobalFitResult", "GlobalSolution"]


class GlobalSolution(eqx.Module):
    """What `global_solve` returns (a leading batch axis on every field under
    `jax.vmap`): the core's `Solution` of the stacked problem (its fields read through:
    the flat `x`, ``θ = [shared, local_1, ..., local_k]``; the weighted residuals `fun`
    ``(k, L)``, zero where masked; `cost`, `grad`, `initial_cost`, `optimality`,
    `active_mask`, `nfev`, `njev`, `nit`, `status` (SciPy's codes), `success`; no `jac`
    and no `factor`: a fit by blocks never forms them) and the unscaled covariance by
    blocks, ``(JᵀJ)⁻¹`` with its `residual_variance` (`BlockCovariance`;
    ``.scaled(absolute_sigma)`` gives SciPy's `pcov`)."""

    solution: Solution
    covariance: BlockCovariance

    def __getattr__(self, name):
        # Only reached for names the module does not have: the `Solution`'s fields.
        if name.startswith("__") or name == "solution":
            raise AttributeError(name)
        return getattr(self.solution, name)


# The `GlobalSolution` fields a result reports as its own, with their Python types.
SOLUTION_FIELDS: dict[str, Callable] = {
    "x": np.asarray,
    "cost": float,
    "initial_cost": float,
    "optimality": float,
    "active_mask": np.asarray,
    "nfev": int,
    "njev": int,
    "nit": int,
    "status": int,
    "success": bool,
}


def solution_attribute(result, name: str):
    """`result.solution`'s field `name` as the result's own (a Python number where it is a
    scalar), for a result's ``__getattr__``."""
    if name in SOLUTION_FIELDS:
        return SOLUTION_FIELDS[name](getattr(result.solution, name))
    raise AttributeError(f"{type(result).__name__!r} object has no attribute {name!r}")


@dataclasses.dataclass(repr=False)
class GlobalFitResult:
    """The result of `global_fit` (NumPy values).

    - `params`, `perr`: dicts by parameter name; a shared parameter's value is a float,
      a local one's an array over the datasets.
    - `shared`, `local`: the names of each kind; `names`: the model's parameters.
    - `x`: the flat ``θ = [shared, local of dataset 0, local of dataset 1, ...]``;
      `covariance` its covariance by blocks (SciPy's recipe: ``(JᵀJ)⁻¹``, times the
      reduced chi-square unless `absolute_sigma`): `shared_pcov` the shared parameters'
      block, `local_pcov` the ``(k, n_local, n_local)`` blocks of each dataset's local
      parameters, `cross_pcov` the ``(k, n_local, n_shared)`` blocks between them, and
      `pcov` the full ``n × n`` matrix (made on demand: ``O(n²)`` memory).
    - `fun` (weighted residuals, the datasets concatenated), `n_points`, `dof`,
      `redchi`, `engine`, `message`; `solution`, the fit's `GlobalSolution` (NumPy
      values), whose `x`, `cost`, `initial_cost`, `optimality`, `active_mask`, `nfev`,
      `njev`, `nit`, `status` and `success` the result reports as its own.
    """

    names: tuple[str, ...]
    shared: tuple[str, ...]
    local: tuple[str, ...]
    flat_names: list[str]
    n_datasets: int
    solution: GlobalSolution  # NumPy values
    covariance: BlockCovariance  # NumPy blocks, scaled
    fun: np.ndarray
    n_points: int
    engine: str
    absolute_sigma: bool

    def __getattr__(self, name: str):
        """The solution's fields, as Python numbers where they are scalars."""
        return solution_attribute(self, name)

    @property
    def message(self) -> str:
        return STATUS_MESSAGES[self.status]

    @property
    def perr_flat(self) -> np.ndarray:
        return np.sqrt(self.covariance.diagonal())

    def _by_name(self, flat) -> dict:
        n_s, k = len(self.shared), self.n_datasets
        local = np.reshape(flat[n_s:], (k, len(self.local)))
        values: dict[str, float | np.ndarray] = {
            name: float(flat[i]) for i, name in enumerate(self.shared)
        }
        values |= {name: local[:, j].copy() for j, name in enumerate(self.local)}
        return {name: values[name] for name in self.names}

    @property
    def params(self) -> dict:
        return self._by_name(self.x)

    @property
    def perr(self) -> dict:
        return self._by_name(self.perr_flat)

    @property
    def pcov(self) -> np.ndarray:
        return self.covariance.dense()

    @property
    def shared_pcov(self) -> np.ndarray:
        return np.asarray(self.covariance.shared)

    @property
    def local_pcov(self) -> np.ndarray:
        return np.asarray(self.covariance.local)

    @property
    def cross_pcov(self) -> np.ndarray:
        return np.asarray(self.covariance.cross)

    @property
    def dof(self) -> int:
        return self.n_points - self.x.size

    @property
    def redchi(self) -> float:
        return 2 * self.cost / self.dof if self.dof > 0 else float("inf")

    def summary(self) -> str:
        """The fit in a few lines: the shared parameters with their standard errors,
        then one row of local parameters per dataset."""
        lines = [
            f"[[Global fit]] {self.n_datasets} datasets, {self.n_points} points, "
            f"{self.x.size} parameters, engine {self.engine!r}",
            f"    cost = {self.cost:.6g}, reduced chi-square = {self.redchi:.6g}, "
            f"nfev = {self.nfev}, success = {self.success} ({self.message})",
            "[[Shared]]",
        ]
        params, perr = self.params, self.perr
        lines += [f"    {name}: {params[name]:.8g} +/- {perr[name]:.3g}" for name in self.shared]
        if self.local:
            lines.append("[[Local]] (value +/- standard error)")
            header = "".join(f"{name:>26}" for name in self.local)
            lines.append(f"    {'dataset':<8}{header}")
            for i in range(self.n_datasets):
                cells = "".join(
                    f"{f'{params[name][i]:.6g} +/- {perr[name][i]:.2g}':>26}" for name in self.local
                )
                lines.append(f"    {i:<8}{cells}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        shared = ", ".join(
            f"{name}={self.params[name]:.4g}±{self.perr[name]:.2g}" for name in self.shared
        )
        state = "success" if self.success else f"failed (status {self.status})"
        return (
            f"GlobalFitResult({self.n_datasets} datasets; shared: {shared or 'none'}; "
            f"local: {', '.join(self.local) or 'none'}; cost={self.cost:.4g}, {state})"
        )
