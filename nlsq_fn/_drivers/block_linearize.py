"""The linearization of a global fit from per-dataset blocks, never the stacked Jacobian.

A global fit's parameters are ``θ = [shared (n_s), local_1 (n_l), ..., local_k (n_l)]``
and its Jacobian is block-arrow shaped: dataset ``i``'s rows depend on the shared
parameters and on its own ``local_i`` only. The strategies need only the cost, the
gradient ``Jᵀf`` and a square ``r`` with ``rᵀr = JᵀJ`` (`Linearization`), and all three
come from the blocks:

- each dataset's Jacobian ``[J_l,i | J_s,i]`` (``L × (n_l + n_s)``, one `vmap`-ed
  forward-mode pass) has a QR factor ``[[R_ll,i, R_ls,i], [0, R_ss,i]]``;
- the QR factor ``R_S`` of the stacked ``R_ss,i`` (``k n_s × n_s``) eliminates the
  local blocks (the square-root form of the Schur complement ``S = A - Σ B_i D_i⁻¹
  B_iᵀ``: ``R_Sᵀ R_S = S``);
- ``r`` has the rows ``[R_ls,i | 0 .. R_ll,i .. 0]`` for each dataset and
  ``[R_S | 0]``, so ``rᵀr = Σ_i J_iᵀ J_i = JᵀJ`` exactly, with the conditioning of ``J``
  (no normal equations).

The cost is ``k`` small QRs and one of ``k n_s × n_s`` instead of the QR of the
``k L × n`` stacked Jacobian (``k L n²``), and memory ``k L (n_l + n_s)`` instead of
``k L n``. That ``n × n`` factor serves dogbox and lm; TRF runs as `BlockTRF` on the
QR blocks alone (`structured_linearization`), solving its subproblem by block
elimination, so a TRF step forms nothing ``n × n``.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from .._evaluation.linearize import Linearization, scale_for_loss
from .._evaluation.precision import full_precision, full_precision_products
from .._problem.loss import AbstractLoss
from .._results.global_fit_result import GlobalSolution
from .._results.solution import finished
from .._strategies.block_arrow import block_covariance
from .._strategies.block_trf import BlockLinearization, BlockTRF
from .._strategies.trf import TRF
from .._strategies.trust_region import RUNNING
from .adjoint import differentiable_fit
from .linearize_at import problem_for
from .solve import advance, start
from .start import start_point

__all__ = [
    "GlobalModel",
    "GlobalSolution",
    "block_factors",
    "block_linearization",
    "global_solve",
    "solve_by_blocks",
]


class GlobalModel(eqx.Module):
    """The stacked model of a global fit: ``model(x, θ)`` on `x` stacked over the
    datasets (leading axis), with ``θ = [shared, local_1, ..., local_k]``; `model` is the
    one-dataset model of the parameter vector in its own order."""

    model: Callable = eqx.field(static=True)
    n_params: int = eqx.field(static=True)
    shared_index: tuple[int, ...] = eqx.field(static=True)
    local_index: tuple[int, ...] = eqx.field(static=True)
    n_datasets: int = eqx.field(static=True)
    # The one-dataset model's parameter names, where known (`global_model` gives them).
    names: tuple[str, ...] | None = eqx.field(default=None, static=True)

    @property
    def shared_names(self) -> tuple[str, ...]:
        names = self.names or tuple(f"p{i}" for i in range(self.n_params))
        return tuple(names[i] for i in self.shared_index)

    @property
    def local_names(self) -> tuple[str, ...]:
        names = self.names or tuple(f"p{i}" for i in range(self.n_params))
        return tuple(names[i] for i in self.local_index)

    @property
    def n_shared(self) -> int:
        return len(self.shared_index)

    @property
    def n_local(self) -> int:
        return len(self.local_index)

    def split(self, theta):
        """``(shared (n_s,), local (k, n_l))`` of the flat `theta`."""
        shared = theta[: self.n_shared]
        local = jnp.reshape(theta[self.n_shared :], (self.n_datasets, self.n_local))
        return shared, local

    def dataset_params(self, shared, local_i):
        """One dataset's parameter vector, in the model's order."""
        params = jnp.zeros((self.n_params,), jnp.result_type(shared, local_i))
        params = params.at[jnp.asarray(self.shared_index, int)].set(shared)
        return params.at[jnp.asarray(self.local_index, int)].set(local_i)

    def __call__(self, x, theta):
        shared, local = self.split(theta)
        params = jax.vmap(self.dataset_params, in_axes=(None, 0))(shared, local)
        return jax.vmap(self.model)(x, params)


def block_jacobian(model: GlobalModel, data, theta: Float[Array, " n"]):
    """The model's part of an evaluation at `theta`: the weighted residuals ``(k, L)``
    (zero where masked) and each dataset's Jacobian block ``[J_l,i | J_s,i]`` ``(k, L,
    w)``, ``w = n_l + n_s`` (one `vmap`-ed forward-mode pass)."""
    shared, local = model.split(theta)
    y = data.y
    sigma = jnp.ones_like(y) if data.sigma is None else jnp.broadcast_to(data.sigma, y.shape)
    mask = jnp.ones(y.shape, bool) if data.mask is None else data.mask

    def residual(shared, local_i, x_i, y_i, sigma_i, mask_i):
        prediction = model.model(x_i, model.dataset_params(shared, local_i))
        # (Masked values must not leak NaN into derivatives: the double `where`.)
        prediction = jnp.where(mask_i, prediction, 0.0)
        y_i = jnp.where(mask_i, y_i, 0.0)
        sigma_i = jnp.where(mask_i, sigma_i, 1.0)
        r = jnp.where(mask_i, (prediction - y_i) / sigma_i, 0.0)
        return r, r

    jacobian = jax.jacfwd(residual, argnums=(0, 1), has_aux=True)
    (jac_shared, jac_local), f = jax.vmap(jacobian, in_axes=(None, 0, 0, 0, 0, 0))(
        shared, local, data.model_x, y, sigma, mask
    )
    return f, jnp.concatenate([jac_local, jac_shared], axis=-1)


def block_summary(f: Float[Array, "k L"], blocks: Float[Array, "k L w"], loss, n_shared: int):
    """The model-independent rest of an evaluation: the cost, the gradient (``θ``'s
    order) and the QR factors ``R_i`` ``(k, w, w)`` of the loss-scaled blocks."""
    k, length, width = blocks.shape
    n_l = width - n_shared
    # Rows of dataset i: [J_l,i | J_s,i], loss-scaled as the stacked problem's rows.
    cost, f_scaled, rows = scale_for_loss(f.reshape(-1), blocks.reshape(k * length, width), loss)
    f_scaled = f_scaled.reshape(k, length)
    blocks = rows.reshape(k, length, width)
    grad_local = jnp.einsum("kla,kl->ka", blocks[..., :n_l], f_scaled)
    grad_shared = jnp.einsum("kla,kl->a", blocks[..., n_l:], f_scaled)
    grad = jnp.concatenate([grad_shared, grad_local.reshape(-1)])
    if length < width:  # a square R needs at least as many rows as columns
        blocks = jnp.pad(blocks, ((0, 0), (0, width - length), (0, 0)))
    r_blocks = jax.vmap(lambda b: jnp.linalg.qr(b, mode="r"))(blocks)[:, :width, :]
    return cost, grad, r_blocks


def block_factors(model: GlobalModel, data, theta: Float[Array, " n"], loss: AbstractLoss):
    """At `theta`: the cost, the gradient (``θ``'s order), the QR factors ``R_i`` (``(k,
    w, w)``, ``w = n_l + n_s``) of each dataset's loss-scaled ``[J_l,i | J_s,i]`` and the
    weighted residuals ``(k, L)``."""
    f, blocks = block_jacobian(model, data, theta)
    cost, grad, r_blocks = block_summary(f, blocks, loss, model.n_shared)
    return cost, grad, r_blocks, f


def structured_linearization(model: GlobalModel, data, theta, loss) -> BlockLinearization:
    """The `BlockLinearization` at `theta` (for `BlockTRF`: nothing ``n × n``)."""
    cost, grad, r_blocks, _ = block_factors(model, data, theta, loss)
    return BlockLinearization(cost, grad, r_blocks, model.n_shared)


def block_linearization(model: GlobalModel, data, theta: Float[Array, " n"], loss: AbstractLoss):
    """The `Linearization` of the stacked problem at `theta` with the ``n × n`` factor
    assembled from the per-dataset blocks (see the module docstring), for the strategies
    that need one (dogbox, lm)."""
    cost, grad, r_blocks, _ = block_factors(model, data, theta, loss)
    return assembled_linearization(cost, grad, r_blocks, model.n_shared)


def assembled_linearization(cost, grad, r_blocks, n_shared: int) -> Linearization:
    """`block_linearization` from the blocks' factors."""
    k, width = r_blocks.shape[0], r_blocks.shape[1]
    n_s, n_l = n_shared, width - n_shared
    r_ll, r_ls, r_ss = r_blocks[:, :n_l, :n_l], r_blocks[:, :n_l, n_l:], r_blocks[:, n_l:, n_l:]
    r_schur = jnp.linalg.qr(r_ss.reshape(k * n_s, n_s), mode="r")
    local_rows = jnp.concatenate(
        [
            r_ls.reshape(k * n_l, n_s),
            # block_diag(R_ll,1, ..., R_ll,k)
            jnp.einsum("iab,ij->iajb", r_ll, jnp.eye(k, dtype=r_ll.dtype)).reshape(
                k * n_l, k * n_l
            ),
        ],
        axis=1,
    )
    shared_rows = jnp.concatenate([r_schur, jnp.zeros((n_s, k * n_l), r_schur.dtype)], axis=1)
    factor = jnp.concatenate([local_rows, shared_rows], axis=0)
    return Linearization(cost=cost, grad=grad, factor=factor)


class BlockStats(eqx.Module):
    """The loop's counts (no derivatives)."""

    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    nit: Int[Array, ""]
    status: Int[Array, ""]
    active_mask: Int[Array, " n"]
    initial_cost: Float[Array, ""]


def _strategy_and_evaluate(model: GlobalModel, data, state):
    """TRF runs as `BlockTRF` (the subproblem by block elimination: nothing ``n × n``);
    dogbox and lm on the ``n × n`` factor assembled from the blocks."""
    if type(state.strategy) is TRF:
        return BlockTRF(n_shared=model.n_shared), lambda x: structured_linearization(
            model, data, x, state.loss
        )
    return state.strategy, lambda x: block_linearization(model, data, x, state.loss)


def _iterate(inputs):
    # (The implicit rule may trace this again after the fit was traced, under the
    # user's `jit` inside `grad`: it keeps full float32 products itself.)
    with full_precision_products():
        return _iterate_loop(inputs)


def _iterate_loop(inputs):
    model, data, state = inputs
    x0, _ = start_point(state)
    problem = problem_for(data, state)
    strategy, evaluate = _strategy_and_evaluate(model, data, state)
    carry = start(strategy, x0, evaluate(x0), problem, state.max_nfev)

    def body(carry):
        out = strategy.step(carry.x, carry.linearization, carry.strategy_state, evaluate, problem)
        return advance(carry, out, strategy, state.max_nfev)

    final = jax.lax.while_loop(lambda c: c.status == RUNNING, body, carry)
    active = strategy.active_constraints(final.x, problem)
    stats = BlockStats(
        final.nfev, final.njev, final.nit, final.status, active, carry.linearization.cost
    )
    return final.x, stats


@full_precision
def global_solve(model: GlobalModel, data, state) -> GlobalSolution:
    """The fit of a global problem (`model` a `GlobalModel`, `data` the datasets stacked
    ``(k, L)``, padded and masked, `state` from ``init(model, data, θ0, solver)``),
    evaluated by blocks: the same steps as `solve` on the stacked problem (the factor
    differs from the dense one by an orthogonal transformation, which the steps do not
    see), never the ``m × n`` Jacobian.

    Pure, like `solve`: works under `jax.jit`, `jax.vmap` (a batch of global fits) and
    autodiff, the derivatives of `x` by the implicit function theorem (`nlsq_fn._drivers.adjoint`;
    its linear solve is dense in ``n``: for moderate ``n``)."""
    x, stats = differentiable_fit(_iterate, (model, data, state))
    # One evaluation at the solution serves the cost, the optimality and the covariance.
    cost, grad, r_blocks, residuals = block_factors(model, data, x, state.loss)
    strategy, _ = _strategy_and_evaluate(model, data, state)
    summary = BlockLinearization(cost, grad, r_blocks, model.n_shared)
    linearization: BlockLinearization | Linearization
    if isinstance(strategy, BlockTRF):
        linearization = summary
    else:
        linearization = assembled_linearization(cost, grad, r_blocks, model.n_shared)
    problem = problem_for(data, state)
    solution = finished(
        x,
        summary,
        residuals,
        None,
        strategy.optimality(x, linearization, problem),
        stats.active_mask,
        stats,
        stats.initial_cost,
    )
    covariance = block_covariance(r_blocks, model.n_shared, cost, data.n_points)
    return GlobalSolution(solution, covariance)


solve_by_blocks = eqx.filter_jit(global_solve)
