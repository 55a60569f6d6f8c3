"""The summary of one pass over a chunk source, folded chunk by chunk (with the fold
and finish of every chunked evaluation, `_evaluation.linearize`).

Chunks arrive padded to one shape (the padding masked out), so one compiled `fold_compiled`
serves them all; a background thread reads ahead (`prefetch`). Besides the strategies'
summary (cost, gradient, Jacobian factor) a pass sums what the fit statistics need.
"""

import queue
import threading
from collections.abc import Iterator
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._evaluation.compiled import compiled
from .._evaluation.linearize import Factorization, Linearization, Running, finish, fold_rows
from .._evaluation.padding import pad_points
from .._problem.data import Data
from .linearize_at import residual_and_jac
from .solver import SolverState


class Sums(eqx.Module):
    """Sums over the points of one pass that the statistics need (``f`` the weighted
    residuals, ``y - ŷ`` the unweighted ones), and those of the data alone, equal in
    every pass over the same data (`data_differences`)."""

    n_points: Float[Array, ""]
    chisqr: Float[Array, ""]  # Σ f²
    ss_res: Float[Array, ""]  # Σ (y - ŷ)²
    sum_y: Float[Array, ""]
    sum_y2: Float[Array, ""]
    sum_x: Float[Array, ""]  # over every value of `x`
    sum_x2: Float[Array, ""]

    @staticmethod
    def zeros(dtype):
        zero = jnp.zeros((), dtype)
        return Sums(*[zero] * 7)

    def __add__(self, other):
        return jax.tree.map(jnp.add, self, other)

    def data_differences(self, other) -> list[str]:
        """The sums of the data (count, Σy, Σy², Σx, Σx²) where `other`, a pass over
        the same data, differs from this one beyond rounding (another chunk size or
        device count sums in another order)."""
        n = float(self.n_points)
        eps = float(np.finfo(np.asarray(self.n_points).dtype).eps)
        rounding = 16 * eps * np.sqrt(max(n, 1.0))
        scales = dict(
            # Counts are exact below 1/eps; above, float sums of chunk counts round.
            n_points=n * 64 * eps if n * eps >= 1 else 0.0,
            sum_y=rounding * np.sqrt(n * float(self.sum_y2)),
            sum_y2=rounding * float(self.sum_y2),
            sum_x=rounding * np.sqrt(n * float(self.sum_x2)),
            sum_x2=rounding * float(self.sum_x2),
        )
        return [
            name
            for name, tolerance in scales.items()
            if not abs(float(getattr(self, name)) - float(getattr(other, name))) <= tolerance
        ]


class PassSummary(eqx.Module):
    """What a pass carries from chunk to chunk: the strategies' running summary and the
    sums of the statistics."""

    running: Running
    sums: Sums

    @staticmethod
    def zeros(n, dtype) -> "PassSummary":
        return PassSummary(Running.zeros(n, dtype), Sums.zeros(dtype))


def fold_chunk(summary: PassSummary, model, state: SolverState, x, chunk: Data) -> PassSummary:
    """Add one chunk's residuals and Jacobian rows to the pass's summary."""
    f, jac = residual_and_jac(model, chunk, state, lambda v: v, x)
    dtype = summary.running.cost.dtype
    running = fold_rows(summary.running, f, jac.astype(dtype), state.loss, state.factorization)
    counted = cast(jax.Array, chunk.mask)  # a chunk always has its mask
    raw = f if chunk.sigma is None else f * chunk.sigma
    y = jnp.where(counted, chunk.y, 0.0)
    x = [jnp.where(counted, leaf, 0).astype(dtype) for leaf in jax.tree.leaves(chunk.x)]
    sum_x: Any = sum(jnp.sum(leaf) for leaf in x)  # arrays (`x` has leaves)
    sum_x2: Any = sum(jnp.sum(leaf**2) for leaf in x)
    sums = summary.sums + Sums(
        jnp.sum(counted).astype(dtype),
        jnp.sum(f**2),
        jnp.sum(raw**2),
        jnp.sum(y),
        jnp.sum(y**2),
        sum_x,
        sum_x2,
    )
    return PassSummary(running, sums)


def finish_pass(summary: PassSummary, factorization: Factorization) -> Linearization:
    """The `Linearization` of a whole pass (`finish`)."""
    return finish(summary.running, factorization)


fold_compiled = compiled(fold_chunk)
finish_compiled = compiled(finish_pass)


def padded_chunks(chunks: Iterator, chunk_size: int, dtype) -> Iterator[Data]:
    """Each chunk as `Data` of exactly `chunk_size` points: the last one's padding
    repeats its last input (so the model stays finite there) and is masked out."""
    for x, y, sigma in chunks:
        m = y.shape[0]
        mask = np.arange(chunk_size) < m
        x = pad_points(np.asarray(x, dtype), m, chunk_size)
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
