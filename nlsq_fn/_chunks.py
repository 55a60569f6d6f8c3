"""The summary of one pass over a chunk source, folded chunk by chunk.

Chunks arrive padded to one shape (the padding masked out), so one compiled `_fold`
serves them all; a background thread reads ahead (`prefetch`). Besides the strategies'
summary (cost, gradient, Jacobian factor) a pass sums what the fit statistics need.
"""

import queue
import threading
from collections.abc import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _sharding
from ._compiled import compiled
from ._curve_fit_class import _pad_points
from ._data import Data
from ._linearize import _accumulate
from ._solve import residual_and_jac
from ._solver import SolverState


class Sums(eqx.Module):
    """Sums over the points of one pass that the statistics need (``f`` the weighted
    residuals, ``y - ŷ`` the unweighted ones)."""

    n_points: Float[Array, ""]
    chisqr: Float[Array, ""]  # Σ f²
    ss_res: Float[Array, ""]  # Σ (y - ŷ)²
    sum_y: Float[Array, ""]
    sum_y2: Float[Array, ""]

    @staticmethod
    def zeros(dtype):
        zero = jnp.zeros((), dtype)
        return Sums(zero, zero, zero, zero, zero)

    def __add__(self, other):
        return jax.tree.map(jnp.add, self, other)


class _Running(eqx.Module):
    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    square: Float[Array, "n n"]  # TSQR factor so far, or JᵀJ with "normal"
    sums: Sums


def _zeros(n, dtype):
    zero = jnp.zeros((), dtype)
    return _Running(zero, jnp.zeros((n,), dtype), jnp.zeros((n, n), dtype), Sums.zeros(dtype))


def _fold_chunk(running: _Running, model, state: SolverState, x, chunk: Data) -> _Running:
    """Add one chunk's residuals and Jacobian rows to the running summary."""
    f, jac = residual_and_jac(model, chunk, state, lambda v: v, x)
    dtype = running.cost.dtype
    cost, grad, square = _accumulate(
        (running.cost, running.grad, running.square), f, jac.astype(dtype),
        state.loss, state.factorization,
    )
    counted = chunk.mask
    raw = f if chunk.sigma is None else f * chunk.sigma
    y = jnp.where(counted, chunk.y, 0.0)
    sums = running.sums + Sums(
        jnp.sum(counted).astype(dtype), jnp.sum(f**2), jnp.sum(raw**2), jnp.sum(y),
        jnp.sum(y**2),
    )
    return _Running(cost, grad, square, sums)


_fold = compiled(_fold_chunk)
_finish = compiled(_sharding.finish)


def _padded(chunks: Iterator, chunk_size: int, dtype) -> Iterator[Data]:
    """Each chunk as `Data` of exactly `chunk_size` points: the last one's padding
    repeats its last input (so the model stays finite there) and is masked out."""
    for x, y, sigma in chunks:
        m = y.shape[0]
        mask = np.arange(chunk_size) < m
        x = _pad_points(np.asarray(x, dtype), m, chunk_size)
        y = np.pad(np.asarray(y, dtype), (0, chunk_size - m))
        if sigma is not None:
            sigma = np.pad(np.asarray(sigma, dtype), (0, chunk_size - m), constant_values=1.0)
        yield Data(x, y, sigma=sigma, mask=mask)


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Iterate in a background thread, `depth` items ahead: reading (and copying to the
    device) the next chunk overlaps with computing on the current one."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        """Queue `item` unless the consumer has stopped listening."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterator:
                if not offer((True, item)):
                    return
        except BaseException as error:  # re-raised in the consuming thread
            offer((False, error))
            return
        offer((True, done))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            ok, item = items.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
