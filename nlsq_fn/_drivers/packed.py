"""A batch of pytrees as a few 2-D arrays, one per dtype: how a compacted batch keeps its
members' loop state (`nlsq_fn._drivers.compaction`).

The loop state of a fit is some thirty small arrays (the point, the summary, the
strategy's state, counters, flags). Kept as thirty arrays, every refill of a working
batch gathers, copies to the device and scatters back each of them, and every call of
a program passes each of them: a cost per array that outweighs the copying itself.
Packed, a row per member and a column per number, it is one gather, one copy and one
scatter per dtype; the programs unpack it (slices and reshapes, free once compiled).
"""

import jax
import jax.numpy as jnp
import numpy as np


class Layout:
    """Where each leaf of a pytree (shapes given by `example`, one member's) lies in
    the packed arrays: its dtype's array, its first column, its size and shape.
    Hashable and with a stable `repr`, so that programs keyed by it can be stored."""

    def __init__(self, example):
        leaves, self.treedef = jax.tree.flatten(example)
        self.dtypes = tuple(sorted({np.dtype(leaf.dtype).name for leaf in leaves}))
        widths = dict.fromkeys(self.dtypes, 0)
        entries = []
        for leaf in leaves:
            name, size = np.dtype(leaf.dtype).name, int(np.prod(leaf.shape))
            entries.append((self.dtypes.index(name), widths[name], size, tuple(leaf.shape)))
            widths[name] += size
        self.entries = tuple(entries)
        self.widths = tuple(widths[name] for name in self.dtypes)
        self._key = (str(self.treedef), self.dtypes, self.entries)

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Layout) and self._key == other._key

    def __repr__(self):
        return f"Layout{self._key!r}"

    def zeros(self, rows: int) -> tuple:
        """Packed zeros for `rows` members (host arrays)."""
        return tuple(
            np.zeros((rows, width), name)
            for name, width in zip(self.dtypes, self.widths, strict=True)
        )

    def unpack(self, packed):
        """The pytree of `packed` (NumPy or JAX arrays), a leading axis on every leaf."""
        rows = packed[0].shape[0]
        leaves = [
            packed[group][:, start : start + size].reshape((rows, *shape))
            for group, start, size, shape in self.entries
        ]
        return jax.tree.unflatten(self.treedef, leaves)

    def pack(self, tree) -> tuple:
        """`tree` (JAX arrays with a leading axis on every leaf) packed."""
        leaves = jax.tree.leaves(tree)
        rows = leaves[0].shape[0]
        columns: list[list] = [[] for _ in self.dtypes]
        for leaf, (group, _, size, _) in zip(leaves, self.entries, strict=True):
            columns[group].append(jnp.reshape(leaf, (rows, size)).astype(self.dtypes[group]))
        return tuple(jnp.concatenate(parts, axis=1) for parts in columns)
