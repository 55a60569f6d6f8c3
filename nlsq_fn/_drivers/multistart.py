"""Multi-start: fit from many starting points at once and keep the best.

The functional answer to local minima: sample starting points inside a box, `vmap` the
fit over them (one compiled call) and pick the lowest cost.
"""

from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, Int, PyTree

from .._misc import is_concrete
from .._problem.data import Data
from .._problem.host_errors import reraise_host_errors
from .._results.solution import Solution
from .batch import with_starts
from .solve import solve
from .solver import Solver, flat_like, init

SamplingMethod = Literal["random", "latin", "sobol"]


class MultiStartResult(eqx.Module):
    """What `multistart` returns.

    - `best`: the candidate with the lowest cost among those that finished without
      error (non-negative status, finite cost).
    - `best_index`: its position among the candidates.
    - `candidates`: every fit, as one `Solution` with a leading batch axis.
    - `starts`: the starting points, shaped like the parameters with a leading axis.
    """

    best: Solution
    best_index: Int[Array, ""]
    candidates: Solution
    starts: PyTree[Float[Array, "starts ..."]]


def latin_hypercube(key: jax.Array, n_samples: int, n_dims: int, dtype=float) -> Array:
    """Latin hypercube samples in ``[0, 1)^n_dims``: each axis's ``n_samples`` strata
    hold exactly one sample each, in an independent random order per axis."""
    permutation_key, jitter_key = jax.random.split(key)
    keys = jax.random.split(permutation_key, n_dims)
    strata = jax.vmap(lambda k: jax.random.permutation(k, n_samples))(keys).T
    jitter = jax.random.uniform(jitter_key, (n_samples, n_dims), dtype)
    return (strata + jitter) / n_samples


def _sobol(key, n_samples, n_dims, dtype):
    # Sobol direction numbers are a table best taken from a maintained library; SciPy is
    # optional here, so it is imported only when asked for.
    try:
        from scipy.stats import qmc
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "method='sobol' needs SciPy (scipy.stats.qmc); use 'latin' or 'random'."
        ) from error
    if not is_concrete(key):
        raise ValueError("method='sobol' needs a concrete `key` (it runs outside JAX).")
    seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
    # Sobol points come in powers of two; draw the next one up and keep the first ones.
    power = max(0, int(np.ceil(np.log2(max(n_samples, 1)))))
    samples = qmc.Sobol(n_dims, scramble=True, seed=seed).random_base2(power)[:n_samples]
    return jnp.asarray(samples, dtype)


def sample_box(
    key: jax.Array,
    n_samples: int,
    lower: Float[Array, " n"],
    upper: Float[Array, " n"],
    method: SamplingMethod = "latin",
) -> Float[Array, "n_samples n"]:
    """``n_samples`` points in the box ``[lower, upper]`` (flat arrays, finite)."""
    n = lower.shape[0]
    if method == "random":
        unit = jax.random.uniform(key, (n_samples, n), lower.dtype)
    elif method == "latin":
        unit = latin_hypercube(key, n_samples, n, lower.dtype)
    elif method == "sobol":
        unit = _sobol(key, n_samples, n, lower.dtype)
    else:
        raise ValueError(f"`method` must be 'random', 'latin' or 'sobol', got {method!r}.")
    return lower + unit * (upper - lower)


def _as_key(key) -> jax.Array:
    """A `jax.random` key; None is key 0 and an integer is a seed."""
    if key is None:
        return jax.random.key(0)
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array) and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise TypeError(f"`key` must be a jax.random.key, an integer seed or None, got {key!r}.")


@reraise_host_errors
def multistart(
    model: Callable,
    data: Data,
    p0: PyTree,
    solver: Solver = Solver(),
    *,
    n_starts: int = 64,
    method: SamplingMethod = "latin",
    key: jax.Array | None = None,
    sample_bounds: tuple[PyTree, PyTree] | None = None,
    starts: PyTree | None = None,
) -> MultiStartResult:
    """Fit from `p0` and from ``n_starts - 1`` points sampled in a box; keep the best.

    **Arguments:**

    - `model`, `data`, `solver`: as for `init` and `solve`.
    - `p0`: the first start; it also fixes the parameters' pytree structure.
    - `n_starts`: how many fits in all (`p0` included).
    - `method`: ``"latin"`` (Latin hypercube, default), ``"random"`` (uniform) or
        ``"sobol"`` (scrambled Sobol, needs SciPy and a concrete `key`).
    - `key`: a ``jax.random`` key or an integer seed (default ``jax.random.key(0)``).
    - `sample_bounds`: ``(lower, upper)`` of the sampling box (scalars, flat arrays or
        pytrees like `p0`); default the solver's bounds. Must be finite.
    - `starts`: instead of sampling, the starting points themselves, shaped like `p0`
        with a leading axis (`p0` then only gives the structure and is not fitted).

    The state is built by `init` once and its parameters swapped for each start; all
    starts run as one batched `solve`. Works under ``jax.jit`` (`model` static or an
    `equinox.Module`; `n_starts` and `method` static).
    """
    state = init(model, data, p0, solver)
    flat_p0, unravel = ravel_pytree(state.params)
    if starts is None:
        if isinstance(n_starts, bool) or not isinstance(n_starts, (int, np.integer)):
            raise TypeError(f"`n_starts` must be an integer, got {n_starts!r}.")
        if n_starts < 1:
            raise ValueError(f"`n_starts` must be at least 1, got {n_starts}.")
        if sample_bounds is None:
            lower, upper = state.lower, state.upper
        else:
            if len(sample_bounds) != 2:
                raise ValueError("`sample_bounds` must be a pair (lower, upper).")
            lower, upper = (
                flat_like(b, state.params, "sample bound", flat_p0.dtype) for b in sample_bounds
            )
        if is_concrete(lower, upper) and not (
            np.all(np.isfinite(np.asarray(lower))) and np.all(np.isfinite(np.asarray(upper)))
        ):
            raise ValueError(
                "Sampling starting points needs a finite box: give finite solver bounds, "
                "`sample_bounds=(lower, upper)`, or the `starts` themselves."
            )
        key = _as_key(key)
        sampled = sample_box(key, n_starts - 1, lower, upper, method)
        flat_starts = jnp.concatenate([flat_p0[None], sampled])
        starts = jax.vmap(unravel)(flat_starts)
    states = with_starts(state, starts)
    candidates = eqx.filter_vmap(solve, in_axes=(None, None, eqx.if_array(0)))(model, data, states)
    usable = (candidates.status >= 0) & jnp.isfinite(candidates.cost)
    best_index = jnp.argmin(jnp.where(usable, candidates.cost, jnp.inf))
    best = jax.tree.map(lambda leaf: leaf[best_index], candidates)
    return MultiStartResult(
        best=best, best_index=best_index, candidates=candidates, starts=states.params
    )
