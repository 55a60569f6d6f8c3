"""The linearised problem at a point, reduced to an ``n``-sized summary.

The strategies only need ``cost``, the gradient ``Jᵀf`` and a square factor ``r`` with
``rᵀr = JᵀJ`` (all after weighting and robust-loss scaling). Computing that summary is
the only step that touches the ``m`` residuals, so it can be done in one shot, in chunks
or across devices without the strategies knowing. Every chunked evaluation (in-memory
chunks here, a stream's passes, each device's or process's share) folds its chunks into
a `Running` summary (`fold_rows`), combines shares (`combine`) and ends with `finish`.
"""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._problem.loss import AbstractLoss, Linear
from .normal_equations import loop_r_factor
from .small_qr import r_factor

Factorization = Literal["auto", "qr", "normal"]
FACTORIZATIONS = ("auto", "qr", "normal")


class Linearization(eqx.Module):
    """Cost, gradient and Jacobian factor of the (robust, weighted) problem at a point."""

    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    factor: Float[Array, "n n"]

    @property
    def finite(self) -> Bool[Array, ""]:
        return (
            jnp.isfinite(self.cost)
            & jnp.all(jnp.isfinite(self.grad))
            & jnp.all(jnp.isfinite(self.factor))
        )

    @property
    def column_norms(self) -> Float[Array, " n"]:
        """Column norms of the Jacobian (equal to those of its factor)."""
        return jnp.sqrt(jnp.sum(self.factor**2, axis=0))


def scale_for_loss(
    f: Float[Array, " m"], jac: Float[Array, "m n"], loss: AbstractLoss
) -> tuple[Float[Array, ""], Float[Array, " m"], Float[Array, "m n"]]:
    """Cost and the loss-scaled ``(f, J)`` whose Gauss–Newton model matches the robust
    cost to second order (Triggs et al., as in SciPy's ``scale_for_robust_loss_function``).
    """
    cost, f_scaled, jac_scale = scale_residuals_for_loss(f, loss)
    if jac_scale is None:
        return cost, f_scaled, jac
    return cost, f_scaled, jac * jac_scale[:, None]


def scale_residuals_for_loss(
    f: Float[Array, " m"], loss: AbstractLoss
) -> tuple[Float[Array, ""], Float[Array, " m"], Float[Array, " m"] | None]:
    """`scale_for_loss` without the Jacobian: the cost, the loss-scaled residuals and
    the factor of each Jacobian row (None for the linear loss, which scales nothing)."""
    rho0, rho1, rho2 = loss(f)
    cost = 0.5 * jnp.sum(rho0)
    if isinstance(loss, Linear):
        return cost, f, None
    eps = jnp.finfo(f.dtype).eps
    jac_scale = jnp.sqrt(jnp.maximum(rho1 + 2 * rho2 * f**2, eps))
    return cost, f * rho1 / jac_scale, jac_scale


def factorize(
    jac: Float[Array, "m n"], method: Factorization, in_loop: bool = False
) -> Float[Array, "n n"]:
    """A square ``r`` with ``rᵀr = JᵀJ``, from the whole Jacobian.

    ``"qr"`` keeps the conditioning of ``J``; ``"normal"`` forms ``JᵀJ`` (cheaper for
    large ``m``, but squares the condition number) and takes a symmetric square root.
    ``"auto"`` is ``"qr"`` for one fit: with ``J`` in memory its QR costs about what
    forming ``JᵀJ`` does; ``JᵀJ`` pays off in the chunked evaluation
    (`chunked_linearize`), which never holds ``J``, and across a batch of small fits
    in the loop (below).

    `in_loop`: the fit's loop, which is never differentiated: across a `vmap`-ed batch
    of few parameters, with ``"auto"``, its R is the Cholesky factor of ``JᵀJ`` for the
    members where that keeps at least half the digits (`loop_r_factor`), else (and with
    ``"qr"``) Householder reflections vectorised over the batch (`r_factor`: QR's ``r``
    up to the signs of its rows) rather than one LAPACK call per member.
    """
    _check_method(method)
    if method == "normal":
        return normal_root_if_safe(jac.T @ jac)[0]
    m, n = jac.shape
    if m < n:
        jac = jnp.concatenate([jac, jnp.zeros((n - m, n), jac.dtype)])
    if not in_loop:
        return jnp.linalg.qr(jac, mode="r")
    # An explicit "qr" is the QR, batched or not; "auto" may take ``JᵀJ`` where safe.
    return loop_r_factor(jac) if method == "auto" else r_factor(jac)


def _check_method(method) -> None:
    if method not in FACTORIZATIONS:
        raise ValueError(f"Unknown factorization {method!r}; use 'auto', 'qr' or 'normal'.")


def residual_and_jacobian(
    residual: Callable[[Float[Array, " n"]], Float[Array, " m"]],
    x: Float[Array, " n"],
    mode: Literal["fwd", "rev"],
) -> tuple[Float[Array, " m"], Float[Array, "m n"]]:
    """Residuals and their exact Jacobian, in one pass."""

    def with_aux(x):
        f = residual(x)
        return f, f

    if mode == "fwd":
        jac, f = jax.jacfwd(with_aux, has_aux=True)(x)
    elif mode == "rev":
        jac, f = jax.jacrev(with_aux, has_aux=True)(x)
    else:
        raise ValueError(f"Unknown Jacobian mode {mode!r}; use 'fwd' or 'rev'.")
    return f, jac


def linearize(
    f: Float[Array, " m"],
    jac: Float[Array, "m n"],
    loss: AbstractLoss,
    method: Factorization,
) -> Linearization:
    cost, f_scaled, jac_scaled = scale_for_loss(f, jac, loss)
    return Linearization(
        cost=cost, grad=jac_scaled.T @ f_scaled, factor=factorize(jac_scaled, method, True)
    )


class Running(eqx.Module):
    """The ``n``-sized summary of the rows folded so far: what every chunked evaluation
    (in-memory chunks, a stream's pass, each device's or process's share) carries from
    chunk to chunk, and `finish` turns into a `Linearization`."""

    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    square: Float[Array, "n n"]  # TSQR factor so far, or JᵀJ ("normal", "auto")

    @staticmethod
    def zeros(n: int, dtype) -> "Running":
        zero = jnp.zeros((), dtype)
        return Running(zero, jnp.zeros((n,), dtype), jnp.zeros((n, n), dtype))


def fold_rows(running: Running, f, jac, loss: AbstractLoss, method: Factorization) -> Running:
    """Fold one chunk's residuals and Jacobian rows into the running summary."""
    chunk_cost, f_scaled, jac_scaled = scale_for_loss(f, jac, loss)
    grad = running.grad + jac_scaled.T @ f_scaled
    if method in ("normal", "auto"):
        square = running.square + jac_scaled.T @ jac_scaled
    else:
        # TSQR: the R factor of [R_so_far; J_chunk] is an R factor of all rows so far.
        square = jnp.linalg.qr(jnp.concatenate([running.square, jac_scaled]), mode="r")
    return Running(running.cost + chunk_cost, grad, square)


def combine(stacked, method: Factorization):
    """One summary from several stacked along a leading axis (the devices', the
    processes'): in every `Running` the costs and gradients add, the squares add
    (``JᵀJ``: "normal", "auto") or are stacked and factorised once more (TSQR); every
    other array (a pass's sums) adds."""

    def one(node):
        if not isinstance(node, Running):
            return jnp.sum(node, axis=0)
        square = node.square
        if method in ("normal", "auto"):  # as `fold_rows` folds them: JᵀJ
            square = jnp.sum(square, axis=0)
        else:
            square = jnp.linalg.qr(jnp.reshape(square, (-1, square.shape[-1])), mode="r")
        return Running(jnp.sum(node.cost, axis=0), jnp.sum(node.grad, axis=0), square)

    return jax.tree.map(one, stacked, is_leaf=lambda node: isinstance(node, Running))


def finish(
    running: Running, method: Factorization, qr_pass: Callable[[], Running] | None = None
) -> Linearization:
    """The `Linearization` of all the rows folded into `running`: its TSQR factor
    ("qr"), or the root of its ``JᵀJ`` ("normal"; "auto" where the root is safe,
    `normal_root_if_safe`, else the factor of `qr_pass()`, a second pass folding TSQR)."""
    if method == "qr":
        return Linearization(cost=running.cost, grad=running.grad, factor=running.square)
    factor, safe = normal_root_if_safe(running.square)
    if method == "auto":
        if qr_pass is None:
            raise ValueError('factorization="auto" needs a second pass (`qr_pass`).')
        factor = jax.lax.cond(safe, lambda: factor, lambda: qr_pass().square)
    return Linearization(cost=running.cost, grad=running.grad, factor=factor)


def check_chunkable(data, chunk_size: int) -> None:
    """Raise unless every array in `data` has the points along a shared leading axis."""
    if chunk_size < 1:
        raise ValueError(f"`chunk_size` must be a positive integer, got {chunk_size}.")
    if data.y.ndim == 0:
        raise ValueError("`chunk_size` needs `y` with at least one axis to chunk along.")
    n_points = data.y.shape[0]
    for leaf in jax.tree.leaves(data.x):
        shape = jnp.shape(leaf)
        if not shape or shape[0] != n_points:
            raise ValueError(
                f"With `chunk_size`, every array in `x` must have the points along its "
                f"leading axis (length {n_points}, as `y`); got an array of shape "
                f"{shape}. Pass per-fit constants through the model instead (e.g. as an "
                "attribute of an `equinox.Module` model)."
            )


def chunk_of(data, start, size, first_new):
    """Points ``start .. start + size`` of `data`; those before `first_new` (already
    counted by the previous chunk) are masked out."""
    take = lambda a: jax.lax.dynamic_slice_in_dim(a, start, size)  # noqa: E731
    y = take(data.y)
    fresh = (start + jnp.arange(size)) >= first_new
    fresh = jnp.reshape(fresh, (size,) + (1,) * (y.ndim - 1))
    mask = jnp.broadcast_to(fresh, y.shape)
    if data.mask is not None:
        mask = mask & take(data.mask)
    sigma = data.sigma
    if sigma is not None and sigma.ndim > 0:
        sigma = take(sigma)
    return type(data)(jax.tree.map(take, data.x), y, sigma=sigma, mask=mask)


def chunked_linearize(
    residual_and_jac: Callable,
    data,
    n_params: int,
    chunk_size: int,
    loss: AbstractLoss,
    method: Factorization,
) -> Linearization:
    """`linearize` over the data in chunks of `chunk_size` points (along the leading
    axis), without ever holding the full Jacobian: each chunk's residuals and Jacobian
    rows are folded into the ``n``-sized summary (``JᵀJ`` or a TSQR factor, ``Jᵀf``, the
    cost) by one compiled loop. With ``"auto"`` the loop sums ``JᵀJ``; only where its
    root is not safe (`normal_root_if_safe`) a second pass builds the TSQR factor.

    `residual_and_jac(chunk)` returns the weighted residuals and Jacobian of the `Data`
    `chunk`. The last chunk is shifted back to end at the last point, its already-counted
    points masked out, so every chunk has the same shape and nothing is padded or copied.
    """
    _check_method(method)
    n_points = data.y.shape[0]
    size = min(chunk_size, n_points)
    n_chunks = -(-n_points // size)
    dtype = data.y.dtype

    def one_pass(method):
        def body(i, running):
            first_new = i * size
            start = jnp.minimum(first_new, n_points - size)
            chunk = chunk_of(data, start, size, first_new)
            f, jac = residual_and_jac(chunk)
            return fold_rows(running, f, jac.astype(dtype), loss, method)

        return jax.lax.fori_loop(0, n_chunks, body, Running.zeros(n_params, dtype))

    return finish(one_pass(method), method, lambda: one_pass("qr"))


def normal_root_if_safe(
    gram: Float[Array, "n n"],
) -> tuple[Float[Array, "n n"], Bool[Array, ""]]:
    """A square root ``r`` of ``gram = JᵀJ`` (``rᵀr = gram``), and whether it is as good
    as the QR factor of ``J`` for the strategies.

    Forming ``JᵀJ`` perturbs each entry by about ``eps * sqrt(G_ii G_jj)``, so after
    scaling the columns to unit norm the error is ``eps`` relative to the largest
    eigenvalue; the directions that ``J`` resolves only weakly (small singular values)
    keep about ``-log10(eps * cond(G_scaled))`` digits. Safe means ``cond(G_scaled) <=
    1 / sqrt(eps)`` (``cond(J_scaled) <~ 8e3`` in float64): at least half the digits
    survive in every direction, and the steps computed from the root differ from the QR
    ones by less than ``sqrt(eps)`` relative (the fit's gradient, ``Jᵀf``, never depends
    on the factor). The root is taken in the scaled variables too, so badly scaled but
    well-conditioned columns lose nothing.
    """
    diagonal = jnp.diagonal(gram)
    scale = jnp.sqrt(jnp.where(diagonal > 0, diagonal, 1.0))
    scaled = gram / scale[:, None] / scale[None, :]
    eigenvalues, eigenvectors = jnp.linalg.eigh(scaled)
    eigenvalues = jnp.maximum(eigenvalues, 0.0)
    eps = jnp.finfo(gram.dtype).eps
    safe = (eigenvalues[0] >= jnp.sqrt(eps) * eigenvalues[-1]) & jnp.all(jnp.isfinite(gram))
    root = jnp.sqrt(eigenvalues)[:, None] * eigenvectors.T * scale[None, :]
    return root, safe
