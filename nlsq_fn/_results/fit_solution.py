"""What a curve fit returns under `jax.jit`, `jax.vmap` or `jax.grad`: the core's
`Solution` with the covariance, as a pytree of JAX arrays."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PyTree

from .solution import Solution


class FitSolution(eqx.Module):
    """What `CurveFit.fit` returns when it runs under `jax.jit`, `jax.vmap` or
    `jax.grad` (traced inputs): a pytree of JAX arrays with the fields of
    `CurveFitResult` that need no concrete values: the core's `Solution` (its fields,
    `x`, `cost`, `fun`, `jac`, ..., `status`, `success`, read through), `pcov`, the
    Jacobian's `rank` and `p0`. Batched fits give a leading batch axis on every field."""

    solution: Solution
    pcov: Float[Array, "n n"]
    rank: Int[Array, ""]
    p0: PyTree = None

    def __getattr__(self, name):
        # Only reached for names the module does not have: the `Solution`'s fields.
        if name.startswith("__") or name == "solution":
            raise AttributeError(name)
        return getattr(self.solution, name)

    @property
    def popt(self):
        return self.solution.x

    @property
    def cov(self):
        return self.pcov

    @property
    def perr(self):
        """Standard errors, ``sqrt(diag(pcov))``."""
        return jnp.sqrt(jnp.diagonal(self.pcov, axis1=-2, axis2=-1))

    stderr = perr

    def __iter__(self):
        return iter((self.popt, self.pcov))


def fit_solution(solution, parts, absolute_sigma, m, p0) -> FitSolution:
    """The traced fit's result; `fun` and `jac` without the padded rows."""
    solution = eqx.tree_at(lambda s: (s.fun, s.jac), solution, (solution.fun[:m], solution.jac[:m]))
    return FitSolution(solution, parts.covariance(absolute_sigma), parts.rank, p0)
