"""Jacobians with structure: SciPy sparse matrices and operators returned by a host
`jac`, and a known sparsity pattern (`jac_sparsity`) for finite differences.

A host `jac` returning a `scipy.sparse` matrix or a `scipy.sparse.linalg.LinearOperator`
is made dense on the host (``m × n`` numbers: for moderate sizes; the matrix-free path
for many parameters is a model written with `jax.numpy`, whose Jacobian is applied as
JVPs / VJPs). With `jac_sparsity`, finite differences perturb whole groups of
structurally independent columns at once (SciPy's ``group_columns``): one evaluation
(two for 3-point) per group instead of per parameter.
"""

import collections
import hashlib
import sys
from typing import TYPE_CHECKING, TypeGuard

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .finite_difference import absolute_step, adjust_to_bounds

if TYPE_CHECKING:
    from jax.experimental.sparse import BCOO

# The most numbers a host sparse / operator Jacobian is made dense into.
MAX_DENSE_ENTRIES = 50_000_000


def jacobian_kind(value) -> str:
    """``"sparse"``, ``"operator"`` or ``"dense"``: what a `jac` returned."""
    if not type(value).__module__.startswith("scipy."):
        return "dense"  # (SciPy imported only for SciPy's types: import time)
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator

    if sp.issparse(value):
        return "sparse"
    if isinstance(value, LinearOperator):
        return "operator"
    return "dense"


def dense_jacobian(value, n: int) -> np.ndarray:
    """A host Jacobian as a dense array (sparse matrices and operators made dense)."""
    kind = jacobian_kind(value)
    if kind == "dense":
        return value
    shape = value.shape
    if shape[0] * shape[1] > MAX_DENSE_ENTRIES:
        raise ValueError(
            f"A {kind} Jacobian of shape {shape} from a NumPy `jac` is made dense on the "
            "host, which needs too much memory here; write the model with jax.numpy "
            "and use tr_solver='lsmr' (its Jacobian is then applied as JVPs / VJPs, "
            "never formed)."
        )
    if kind == "sparse":
        return value.toarray()
    return np.asarray(value.matmat(np.eye(shape[1], dtype=value.dtype)))


def structured_like(kind: str, jac: np.ndarray):
    """A dense result's Jacobian as the type the user's `jac` returned (CSR / operator)."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import aslinearoperator

    return sp.csr_array(jac) if kind == "sparse" else aslinearoperator(jac)


def is_bcoo(value) -> TypeGuard["BCOO"]:
    """Whether `value` is a JAX `BCOO` matrix (without importing JAX's sparse module,
    a third of a second: no `BCOO` exists before it is imported)."""
    sparse = sys.modules.get("jax.experimental.sparse")
    return sparse is not None and isinstance(value, sparse.BCOO)


def as_jacobian(value):
    """A `jac` function's value as an array, a JAX `BCOO` matrix kept as it is."""
    return value if is_bcoo(value) else jnp.asarray(value)


def host_matrix(jac):
    """A result's Jacobian on the host: a NumPy array, or a SciPy CSR matrix for a JAX
    `BCOO` one."""
    if not is_bcoo(jac):
        return np.asarray(jac)
    import scipy.sparse as sp

    indices = np.asarray(jac.indices)
    return sp.csr_array((np.asarray(jac.data), (indices[:, 0], indices[:, 1])), shape=jac.shape)


def check_jac_sparsity(jac_sparsity, m: int, n: int):
    """The pattern as a SciPy CSC matrix of booleans, checked to be ``(m, n)``."""
    import scipy.sparse as sp

    if sp.issparse(jac_sparsity):
        pattern = sp.csc_array(jac_sparsity)
    else:
        pattern = sp.csc_array(np.atleast_2d(np.asarray(jac_sparsity)))
    if pattern.shape != (m, n):
        raise ValueError(
            f"`jac_sparsity` has wrong shape: expected {(m, n)}, actual {pattern.shape}."
        )
    return pattern.astype(bool)


def group_columns(pattern) -> np.ndarray:
    """A group number for each column such that no two columns of a group share a
    row (greedy, in column order, as SciPy's ``group_columns`` without reordering): each
    column takes the lowest group not yet used in any of its rows (a bit mask per row)."""
    import scipy.sparse as sp

    pattern = sp.csc_array(pattern)
    m, n = pattern.shape
    indptr, indices = pattern.indptr.tolist(), pattern.indices.tolist()
    taken = [0] * m  # per row: the groups of the columns placed in it so far, as bits
    groups = [0] * n
    for j in range(n):
        rows = indices[indptr[j] : indptr[j + 1]]
        forbidden = 0
        for r in rows:
            forbidden |= taken[r]
        bit = ~forbidden & (forbidden + 1)  # the lowest free group
        groups[j] = bit.bit_length() - 1
        for r in rows:
            taken[r] |= bit
    return np.asarray(groups, np.int64)


class Pattern:
    """A sparsity pattern's ``(row, column)`` pairs, each column's group and the shape,
    as a hashable static value (NumPy arrays, hashed by their bytes once: a fit's
    program is keyed by it without walking tens of thousands of Python numbers)."""

    def __init__(self, rows, cols, groups, shape: tuple[int, int]):
        self.rows = np.asarray(rows, np.int32)
        self.cols = np.asarray(cols, np.int32)
        self.groups = np.asarray(groups, np.int32)
        self.shape = shape
        digest = hashlib.blake2b(digest_size=16)
        for array in (self.rows, self.cols, self.groups):
            digest.update(array.tobytes())
        self._key = (shape, len(self.rows), digest.digest())

    def __hash__(self):
        return hash(self._key)

    def __eq__(self, other):
        return isinstance(other, Pattern) and self._key == other._key

    def __repr__(self):
        return f"Pattern(shape={self.shape}, nnz={len(self.rows)})"


_patterns: collections.OrderedDict = collections.OrderedDict()
_PATTERNS_KEPT = 8


class GroupedDifferences(eqx.Module):
    """A `jac` mode for a known sparsity pattern: the columns of a group (structurally
    independent: no shared row) are found together, by SciPy's finite differences
    (`method` ``"2-point"``, ``"3-point"``, ``"cs"``) or, for ``"fwd"``, exactly by one
    JVP per group (compressed forward mode). The pattern's ``(row, column)`` pairs and
    each column's group are static (hashable tuples)."""

    method: str = eqx.field(static=True)
    pattern: Pattern = eqx.field(static=True)

    @classmethod
    def from_pattern(cls, method: str, pattern) -> "GroupedDifferences":
        import scipy.sparse as sp

        coo = sp.coo_array(pattern)
        shape = (int(coo.shape[0]), int(coo.shape[1]))
        rows, cols = np.asarray(coo.row, np.int32), np.asarray(coo.col, np.int32)
        # The grouping (a Python loop over the columns) is kept for refits with the
        # same pattern, found by its pairs' bytes.
        key = (shape, hashlib.blake2b(rows.tobytes() + cols.tobytes()).digest())
        found = _patterns.get(key)
        if found is None:
            found = _patterns[key] = Pattern(rows, cols, group_columns(pattern), shape)
            if len(_patterns) > _PATTERNS_KEPT:
                _patterns.popitem(last=False)
        _patterns.move_to_end(key)
        return cls(method, found)

    @property
    def groups(self) -> np.ndarray:
        return self.pattern.groups

    @property
    def rows(self) -> np.ndarray:
        return self.pattern.rows

    @property
    def cols(self) -> np.ndarray:
        return self.pattern.cols

    @property
    def shape(self) -> tuple[int, int]:
        return self.pattern.shape

    def _check(self, m: int, n: int) -> None:
        if self.shape != (m, n):  # static: when the fit is traced
            raise ValueError(
                f"The Jacobian's sparsity pattern has shape {self.shape}; this fit's "
                f"Jacobian is {(m, n)} (residuals x parameters)."
            )

    def residual_and_values(self, residual, x, unravel, diff_step, lower, upper, bounded):
        """The residuals ``residual(unravel(x))`` and the Jacobian's values at the
        pattern's pairs: one evaluation (or JVP) per group, two per group for 3-point."""
        n = x.size
        groups = jnp.asarray(self.groups)
        n_groups = int(self.groups.max()) + 1
        basis = (jnp.arange(n_groups)[:, None] == groups[None, :]).astype(x.dtype)
        rows, cols = jnp.asarray(self.rows, jnp.int32), jnp.asarray(self.cols, jnp.int32)
        g = groups[cols]
        if self.method == "fwd":  # J @ (sum of a group's unit vectors): exact columns
            f0, jvp = jax.linearize(lambda x_: residual(unravel(x_)), x)
            self._check(f0.size, n)
            return f0, jax.vmap(jvp)(basis)[g, rows]
        f0 = residual(unravel(x))
        self._check(f0.size, n)
        rel = None if diff_step is None else jnp.broadcast_to(jnp.asarray(diff_step, x.dtype), (n,))
        method = self.method
        step = absolute_step(x, f0.dtype, method, rel)
        at = jax.vmap(lambda x_: residual(unravel(x_)))
        if method == "cs":
            params = unravel(x)

            def along_imaginary(direction):
                return residual(jax.tree.map(lambda p, d: p + 1j * d, params, unravel(direction)))

            f_complex = jax.vmap(along_imaginary)(basis * step[None, :])
            difference, dx = jnp.imag(f_complex), step
        elif method == "2-point":
            if bounded:
                step, _ = adjust_to_bounds(x, step, method, lower, upper)
            difference = at(x + basis * step[None, :]) - f0
            dx = (x + step) - x
        else:
            step, one_sided = jnp.abs(step), jnp.zeros(n, bool)
            if bounded:
                step, one_sided = adjust_to_bounds(x, step, method, lower, upper)
            near = jnp.where(one_sided, step, -step)
            far = jnp.where(one_sided, 2 * step, step)
            f_near = at(x + basis * near[None, :])
            f_far = at(x + basis * far[None, :])
            dx = jnp.where(one_sided, (x + 2 * step) - x, (x + step) - (x - step))
            difference = None
        if difference is None:
            central = f_far[g, rows] - f_near[g, rows]
            sided = -3.0 * f0[rows] + 4 * f_near[g, rows] - f_far[g, rows]
            values = jnp.where(one_sided[cols], sided, central)
        else:
            values = difference[g, rows]
        return f0, (values / dx[cols]).astype(f0.dtype)

    def dense(self, values, m: int, n: int):
        """The ``(m, n)`` Jacobian, zero outside the pattern."""
        rows, cols = jnp.asarray(self.rows, jnp.int32), jnp.asarray(self.cols, jnp.int32)
        return jnp.zeros((m, n), values.dtype).at[rows, cols].set(values)

    def sparse(self, values, m: int, n: int) -> "BCOO":
        """The Jacobian as a JAX `BCOO` matrix (its pattern's entries only)."""
        from jax.experimental.sparse import BCOO

        indices = jnp.stack(
            [jnp.asarray(self.rows, jnp.int32), jnp.asarray(self.cols, jnp.int32)], axis=1
        )
        return BCOO((values, indices), shape=(m, n))


def jac_sparsity(pattern, method: str = "fwd") -> GroupedDifferences:
    """The `jac` of a `Solver` for a Jacobian with a known sparsity `pattern` (``(m,
    n)``, array-like or SciPy sparse; nonzero where a residual depends on a parameter),
    as SciPy's ``jac_sparsity``: columns that share no row are found together, by one
    JVP per group of columns (``method="fwd"``, JAX's exact derivatives: compressed
    forward mode) or SciPy's finite differences (``"2-point"``, ``"3-point"``,
    ``"cs"``). A dense strategy gets the ``m × n`` matrix from a few JVPs instead of
    ``n``; `TRFLSMR` / `DogboxLSMR` keep it sparse (a JAX `BCOO`), ``m × n`` never
    formed. Entries outside the pattern are taken as zero: a wrong pattern gives a
    wrong Jacobian."""
    if method not in ("fwd", "2-point", "3-point", "cs"):
        raise ValueError(f"`method` must be 'fwd', '2-point', '3-point' or 'cs', got {method!r}.")
    import scipy.sparse as sp

    if sp.issparse(pattern):
        checked = sp.csc_array(pattern)
    else:
        array = np.asarray(pattern)
        if array.ndim != 2:
            raise ValueError(f"`pattern` must be 2-D (m, n), got shape {array.shape}.")
        checked = sp.csc_array(array)
    return GroupedDifferences.from_pattern(method, checked.astype(bool))
