"""Chunks split over a mesh of devices (``jax.sharding``).

The summary of a pass is a sum over points, so each device folds its share of every
chunk into a summary of its own (no communication per chunk) and one reduction per
pass combines them: costs and gradients add, the devices' TSQR factors are stacked and
factorised once more (``JᵀJ`` add with ``factorization="normal"``).

A batch of independent fits needs no reduction at all: `shard_batch` places each
device's members on it, and XLA partitions the jitted, vmapped fit along the batch axis.

In-memory data may be placed over devices too (`shard_points`): the jitted `solve`
then gives the single-device fit, but XLA's sharding propagation gathers the Jacobian
(or, chunked, the data) onto every device for the factorisation, so it does not split
the memory; `StreamingOptimizer(devices=...)` does.
"""

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._problem.data import points_axis
from .compiled import compiled
from .linearize import Factorization, combine

AXIS = "points"


def one_axis_mesh(devices, axis_name: str) -> Mesh:
    """A one-axis mesh named `axis_name` from a list of distinct devices (or that
    mesh), checked here so that a bad list gets a clear error, not JAX's assertion."""
    if isinstance(devices, Mesh):
        if devices.axis_names != (axis_name,):
            raise ValueError(
                f"The mesh must have the one axis {axis_name!r}; it has {devices.axis_names}."
            )
        return devices
    devices = list(devices)
    if not devices:
        raise ValueError("`devices` is empty.")
    repeated = [str(d) for i, d in enumerate(devices) if d in devices[:i]]
    if repeated:
        raise ValueError(
            f"`devices` lists {', '.join(dict.fromkeys(repeated))} more than once; give "
            "each device once (each holds its own share)."
        )
    return Mesh(np.asarray(devices), (axis_name,))


def points_mesh(devices) -> Mesh:
    """A one-axis mesh named ``"points"`` from a list of devices (or that mesh)."""
    return one_axis_mesh(devices, AXIS)


def check_shares(count: int, what: str, n_devices: int, remedy: str) -> None:
    """The error for `count` items (`what`: "points of `data`", ...) along a leading
    axis that cannot be split evenly over `n_devices` devices."""
    if count % n_devices:
        raise ValueError(
            f"{count} {what} along the leading axis are not a multiple of the "
            f"{n_devices} devices; {remedy}."
        )


def _points_spec(leaf, m: int) -> PartitionSpec:
    """A streamed chunk's array split over the devices along its points axis
    (`points_axis`: the last of `x`'s, the only one of `y`, `sigma`, `mask`)."""
    axes: list = [None] * np.ndim(leaf)
    axes[cast(int, points_axis(leaf, m))] = AXIS  # (a chunk's arrays all have one)
    return PartitionSpec(*axes)


def _chunk_specs(chunk):
    m = chunk.y.shape[0]
    return jax.tree.map(lambda leaf: _points_spec(leaf, m), chunk)


def place_chunk(chunk, mesh: Mesh):
    """Put each device's share of `chunk`'s points on that device."""
    m = chunk.y.shape[0]
    return jax.tree.map(
        lambda leaf: jax.device_put(leaf, NamedSharding(mesh, _points_spec(leaf, m))), chunk
    )


def sharded_zeros(zeros, mesh: Mesh):
    """One running summary per device (a leading device axis, split over the mesh)."""
    n_devices = mesh.devices.size
    return jax.tree.map(
        lambda leaf: jax.device_put(
            jnp.broadcast_to(leaf, (n_devices, *leaf.shape)),
            NamedSharding(mesh, PartitionSpec(AXIS)),
        ),
        zeros,
    )


@compiled
def sharded_fold(fold, running, model, state, x, chunk, mesh: Mesh):
    """`fold` run on every device over its share of `chunk`, into its own summary."""

    def local(running, chunk):
        mine = jax.tree.map(lambda leaf: leaf[0], running)
        folded = fold(mine, model, state, x, chunk)
        return jax.tree.map(lambda leaf: leaf[None], folded)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(PartitionSpec(AXIS), _chunk_specs(chunk)),
        out_specs=PartitionSpec(AXIS),
    )(running, chunk)


@compiled
def reduce_devices(running, factorization: Factorization):
    """The summary of all devices' summaries (`combine`: without the device axis)."""
    return combine(running, factorization)


def shard_batch(tree, devices, axis_name: str = "batch"):
    """Split the leading (batch) axis of every array in `tree` over `devices`, so that
    a jitted batched fit (`solve_batch`) runs each device's members on that device.
    The batch size must be a multiple of the number of devices."""
    mesh = one_axis_mesh(devices, axis_name)

    def place(leaf):
        if not eqx.is_array(leaf) or jnp.ndim(leaf) == 0:
            return leaf
        check_shares(
            jnp.shape(leaf)[0],
            "members of the batch",
            mesh.devices.size,
            "add members (say, copies of one, whose fits you drop) or use fewer devices",
        )
        return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec(axis_name)))

    return jax.tree.map(place, tree)


def shard_points(data, devices):
    """`data` (a `Data`) with its points split over `devices`: `y`, `sigma`, `mask` and
    every array of `x` along their leading axis (where the points are), a one-axis mesh
    named ``"points"``. A jitted `solve` on it gives the single-device fit: the model
    and its Jacobian are evaluated where the points are, and XLA gathers what the
    factorisation needs (each device then holds the whole Jacobian, or in chunked fits
    the whole data: no memory is saved; for that, `StreamingOptimizer(devices=...)`).
    The number of points must be a multiple of the number of devices."""
    mesh = points_mesh(devices)
    n_devices = mesh.devices.size
    m = data.y.shape[0] if data.y.ndim else 0
    check_shares(
        m, "points of `data`", n_devices, "pad `data` with masked points (`Data(mask=...)`)"
    )

    def place(leaf):
        if not eqx.is_array(leaf) or jnp.ndim(leaf) == 0 or jnp.shape(leaf)[0] != m:
            return leaf  # not laid out along the points (e.g. a scalar sigma)
        spec = PartitionSpec(AXIS, *([None] * (jnp.ndim(leaf) - 1)))
        return jax.device_put(leaf, NamedSharding(mesh, spec))

    return jax.tree.map(place, data)
