"""Several processes under `jax.distributed`: each folds its share of the points.

The summary of a pass is a sum over points, so each process folds the chunks of its
share into a summary of its own, and once per pass the processes' summaries are
gathered with JAX's own collectives (`multihost_utils.process_allgather`) and reduced
exactly as the devices' summaries are (`_evaluation.sharding.reduce_devices`). Every process then
holds the same summary and takes the same strategy step: the same number of passes,
the same parameters at the end, with no other communication.

Which points are a process's share: a source that can read any range of its rows
(`ArraySource`, `NpySource`, see `AbstractSource.part`) gives each process one
contiguous block of rows, and the process reads only that block; any other source is
read in full by every process, which folds only every ``process_count``-th chunk. Where
each process has its own data (its own files), ``fit(source, split=False)`` takes each
process's source as its share as it is.
"""

import itertools
from collections.abc import Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils

from .._evaluation import sharding as _sharding
from .fixed_chunks import fixed_chunks
from .sources import AbstractSource, Piece


def several() -> bool:
    """Whether this fit runs in several processes (`jax.distributed.initialize`)."""
    return jax.process_count() > 1


def share(source: AbstractSource, chunk_size: int, split: bool) -> Iterator[Piece]:
    """This process's chunks of `source` (all of them in a single process)."""
    if not several() or not split:
        return fixed_chunks(source.pieces(), chunk_size)
    count, index = jax.process_count(), jax.process_index()
    part = source.part(index, count)
    if part is not None:
        return fixed_chunks(part.pieces(), chunk_size)
    return itertools.islice(fixed_chunks(source.pieces(), chunk_size), index, None, count)


def combine(running, factorization: str):
    """The summary of all processes' summaries (a `PassSummary`), the same on each."""
    if not several():
        return running
    # Each process's summary, stacked along a new leading axis, on every process.
    gathered = multihost_utils.process_allgather(running)
    gathered = jax.tree.map(jnp.asarray, gathered)
    return _sharding.reduce_devices(gathered, factorization)


def any_process(flag: bool) -> bool:
    """Whether `flag` is True on any process (e.g. an error every process must raise)."""
    if not several():
        return flag
    flags = multihost_utils.process_allgather(jnp.asarray(flag, jnp.int32))
    return bool(jnp.any(jnp.asarray(flags)))


def agree(tree):
    """Process 0's `tree` on every process (e.g. the initial parameters, which a model's
    guess could otherwise take from different data in each process)."""
    if not several():
        return tree
    arrays, rest = eqx.partition(tree, eqx.is_array)
    arrays = jax.tree.map(jnp.asarray, multihost_utils.broadcast_one_to_all(arrays))
    return eqx.combine(arrays, rest)


def check_local(devices) -> None:
    """Each process splits its chunks over devices of its own."""
    others = [d for d in devices if d.process_index != jax.process_index()]
    if others:
        raise ValueError(
            f"`devices` holds {len(others)} devices of other processes; under "
            "jax.distributed give each process its own, `devices=jax.local_devices()` "
            "(the processes' summaries are combined once per pass)."
        )


def is_main() -> bool:
    """The process that shows progress (process 0)."""
    return jax.process_index() == 0
