"""`StreamingOptimizer.update`: a stream seen once, chunk by chunk.

The chunks already seen live on only as a quadratic model of their cost (`_Prior`), an
``n``-sized summary; each new chunk's exact cost plus that quadratic is minimised by
the strategy's own steps (`_drivers.host_loop`), and the chunk then joins the quadratic at the
new parameters: recursive (information-form) Gauss–Newton. What it approximates is
documented on `StreamingOptimizer.update`.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .._drivers.chunks import Sums
from .._drivers.host_loop import host_iterations, start_loop
from .._drivers.start import start_point
from .._evaluation.compiled import compiled, limit_programs
from .._evaluation.linearize import Linearization
from .._misc import tree_where
from .._problem.data import Data
from .._results.fit_result import CurveFitResult
from .._strategies.trust_region import RUNNING
from .engine import StreamEngine
from .fixed_chunks import check_values, fixed_chunks


class StreamUpdate(eqx.Module):
    """What `StreamingOptimizer.update` returns after each chunk."""

    x: Float[Array, " n"]  # the parameters after this chunk
    cost: Float[Array, ""]  # approximate cost of all points so far (see `update`)
    grad: Float[Array, " n"]  # its gradient at `x`
    step_norm: Float[Array, ""]  # how far this chunk moved the parameters
    n_points: int = eqx.field(static=True)
    n_chunks: int = eqx.field(static=True)
    status: int = eqx.field(static=True)  # of the fit on this chunk
    converged: bool = eqx.field(static=True)


class _Prior(eqx.Module):
    """The quadratic model ``c + gᵀ(p - centre) + ½‖r (p - centre)‖²`` of the cost of
    the chunks already seen, each linearised at the parameters fitted right after it."""

    centre: Float[Array, " n"]
    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    factor: Float[Array, "n n"]

    def at(self, p):
        d = p - self.centre
        rd = self.factor @ d
        return self.cost + self.grad @ d + 0.5 * rd @ rd, self.grad + self.factor.T @ rd


@compiled
def _with_prior(lin: Linearization, prior: _Prior, p) -> Linearization:
    cost, grad = prior.at(p)
    factor = jnp.linalg.qr(jnp.concatenate([lin.factor, prior.factor]), mode="r")
    return Linearization(lin.cost + cost, lin.grad + grad, factor)


def update_stream(
    engine: StreamEngine,
    stream: dict | None,
    x_chunk,
    y_chunk,
    sigma=None,
    *,
    p0,
    chunk_size,
    factorization: str,
) -> tuple[dict, StreamUpdate]:
    """`StreamingOptimizer.update(x_chunk, y_chunk, sigma)` (see there) on the stream's
    state `stream` (None before the first chunk): the new state and the update. A chunk
    that cannot be taken in (a NaN, a model that is not pointwise) raises, and the
    caller keeps the state it had: later chunks still count."""
    dtype = jnp.result_type(float)
    x_chunk, y_chunk = np.asarray(x_chunk, dtype), np.asarray(y_chunk, dtype)
    sigma = None if sigma is None else np.asarray(sigma, dtype)
    seen = 0 if stream is None else int(float(stream["sums"].n_points))
    check_values(x_chunk, y_chunk, sigma, seen, f"the stream (this chunk starts at row {seen})")
    if stream is None:
        limit_programs()
        first = Data(x_chunk, y_chunk, sigma=sigma)
        state = engine.state(first, p0, factorization)
        n = state.params.size
        zero = jnp.zeros((), dtype)
        stream = dict(
            state=state,
            prior=_Prior(
                start_point(state)[0], zero, jnp.zeros(n, dtype), jnp.zeros((n, n), dtype)
            ),
            sums=Sums.zeros(dtype),
            n_chunks=0,
            nfev=0,
            njev=0,
            nit=0,
            status=RUNNING,
            initial_cost=None,
            last=None,
        )
    else:
        stream = dict(stream)  # the caller's state is left as it was
    state, prior = stream["state"], stream["prior"]
    chunk_size = engine.chunk_size(chunk_size, state.params.size, dtype)
    chunks = list(
        engine.chunks(
            fixed_chunks(iter([(x_chunk, y_chunk, sigma)]), chunk_size),
            chunk_size,
            dtype,
            read_ahead=False,
        )
    )

    def evaluate(p, check_pointwise=False):
        lin, sums = engine.summarize(chunks, state, p, check_pointwise=check_pointwise)
        return _with_prior(lin, prior, p), sums

    n_points = float(stream["sums"].n_points) + y_chunk.shape[0]
    problem = engine.problem(state, n_points)
    p_before = prior.centre
    lin, sums = evaluate(p_before, check_pointwise=True)
    if stream["initial_cost"] is None:
        stream["initial_cost"] = lin.cost
    carry = start_loop(state.strategy, p_before, lin, problem, state.max_nfev)
    for step in host_iterations(state.strategy, carry, problem, state.max_nfev, evaluate):
        carry, accepted, trial_sums = step
        sums = tree_where(accepted, trial_sums, sums)
    p, lin = carry.x, carry.linearization
    # The chunk joins the quadratic linearised at the new parameters: the summary
    # there (chunk plus quadratic so far) is the new quadratic.
    stream["prior"] = _Prior(p, lin.cost, lin.grad, lin.factor)
    stream["sums"] = stream["sums"] + sums
    stream["n_chunks"] += 1
    for name in ("nfev", "njev", "nit"):
        stream[name] += int(getattr(carry, name))
    status = int(carry.status)
    stream["status"] = status
    step_norm = jnp.linalg.norm(p - p_before)
    converged = (
        status > 0
        and stream["n_chunks"] > 1
        and float(step_norm) < state.xtol * (state.xtol + float(jnp.linalg.norm(p)))
    )
    stream["last"] = (carry, problem)
    return stream, StreamUpdate(
        x=p,
        cost=carry.linearization.cost,
        grad=carry.linearization.grad,
        step_norm=step_norm,
        n_points=int(n_points),
        n_chunks=stream["n_chunks"],
        status=status,
        converged=bool(converged),
    )


def stream_result(engine: StreamEngine, stream: dict | None) -> CurveFitResult:
    """`StreamingOptimizer.result()` (see there) of the stream's state `stream`."""
    if stream is None or stream["last"] is None:
        raise ValueError("No data yet: call `update(x_chunk, y_chunk)` first.")
    carry, problem = stream["last"]
    prior = stream["prior"]
    cost, grad = prior.at(prior.centre)
    carry = eqx.tree_at(
        lambda c: (c.linearization, c.nfev, c.njev, c.nit),
        carry,
        (
            Linearization(cost, grad, prior.factor),
            jnp.asarray(stream["nfev"]),
            jnp.asarray(stream["njev"]),
            jnp.asarray(stream["nit"]),
        ),
    )
    return engine.result(stream["state"], problem, carry, stream["sums"], stream["initial_cost"])
