"""nlsq_fn's model-independent programs, compiled once per machine rather than once per
process.

The steps of a fit that do not depend on the model (`propose`, `judge`, the loop's
start and end, the loss-scaled summary of an evaluation, the covariance's parts) depend
only on the strategy, the options, the number of parameters and points, and the dtype.
A fresh process would compile them again on its first fit (about a second on a CPU).
`stored` compiles each such program once, writes the executable to a folder on disk
(JAX's `serialize_executable`) and loads it in later processes.

Only these programs are stored, never the user's: JAX's own persistent cache is one
setting for the whole process and would also write every program of the user's.

- Where: ``$NLSQ_FN_PROGRAM_CACHE`` if set (``0`` or ``off`` switches storing off), else
  ``$XDG_CACHE_HOME/nlsq_fn/programs`` (by default ``~/.cache/nlsq_fn/programs``).
- How much: 10–120 kB per program, about 0.3 MB per configuration of a fit; the folder
  is trimmed to `MAX_BYTES`, least recently used first.
- Keyed by JAX's and jaxlib's versions, the device, the CPU's features and nlsq_fn's
  own source (every module of the package): an entry from another version or machine is
  never loaded.
- A program whose entry cannot be read, or whose arguments are traced, is compiled as
  before. CPU only: on other devices these programs are compiled in every process, as
  JAX does by default.
"""

import contextlib
import hashlib
import os
import pathlib
import pickle
import re
import threading

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .compiled import clear_jit, jit_cache_size
from .precision import full_precision, user_precision

MAX_BYTES = 64 * 2**20
CACHE_ENV = "NLSQ_FN_PROGRAM_CACHE"
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")  # a `repr` that differs in every process

_lock = threading.Lock()
_environment: list = []  # computed once: JAX, devices, CPU, nlsq_fn's source
_lapack_ready: list = []
_lapack_lock = threading.Lock()


def cache_folder() -> pathlib.Path | None:
    """Where programs are stored, or None when storing is switched off (and on devices
    other than the CPU, where loading has not been tested)."""
    if jax.default_backend() != "cpu":
        return None
    setting = os.environ.get(CACHE_ENV)
    if setting is not None and setting.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    if setting:
        return pathlib.Path(setting).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(cache) / "nlsq_fn" / "programs"


def _environment_key() -> str:
    if not _environment:
        # The whole package's source: the stored programs run the strategies' and the
        # drivers' code (`nlsq_fn._drivers.batched_steps`), not only this folder's.
        source = hashlib.sha256()
        package = pathlib.Path(__file__).parents[1]
        for path in sorted(package.rglob("*.py")):
            source.update(str(path.relative_to(package)).encode())
            source.update(path.read_bytes())
        try:
            with open("/proc/cpuinfo") as info:
                flags = next((line for line in info if line.startswith("flags")), "")
        except OSError:
            flags = ""
        import jaxlib

        device = jax.devices()[0]
        _environment.append(
            repr(
                (
                    jax.__version__,
                    jaxlib.__version__,
                    device.platform,
                    device.client.platform_version,
                    device.device_kind,
                    len(jax.devices()),
                    flags,
                    source.hexdigest(),
                )
            )
        )
    return _environment[0]


class StoredProgram:
    """`equinox.filter_jit` of a model-independent function whose executables are also
    kept on disk (see the module's docstring). Its arrays are the program's inputs;
    everything else (strategies, options) is part of the key. Every output must be an
    array (or None)."""

    def __init__(self, function):
        self.function = full_precision(function)
        self.name = function.__name__
        self._entries = {}
        self.loads = 0  # executables loaded from disk in this process
        self._fallback = eqx.filter_jit(self.function)

    def __call__(self, *args):
        found = self._lookup(args)
        if found is None:
            return self._fallback(*args)  # inside the user's transformation
        (executable, out_tree), leaves = found
        return jax.tree.unflatten(out_tree, executable(*leaves))

    def flat(self, *args):
        """``(executable, leaves, out_tree)``: the program for `args` as a function of
        their array leaves (in ``jax.tree.leaves`` order), those leaves, and the
        structure of its outputs. A host loop that calls the program many times on
        arrays of the same shapes calls `executable` directly, without flattening
        `args` and building the key at every call."""
        found = self._lookup(args)
        if found is not None:
            (executable, out_tree), leaves = found
            return executable, leaves, out_tree
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, in_tree = jax.tree.flatten(dynamic)

        def through_jit(*leaves):
            return jax.tree.leaves(self._fallback(*eqx.combine(in_tree.unflatten(leaves), static)))

        return through_jit, leaves, jax.tree.structure(eqx.filter_eval_shape(self.function, *args))

    def _lookup(self, args):
        """``((executable, out_tree), leaves)`` for `args`, compiled or loaded on first
        use; None where the arguments are traced or the options unhashable."""
        dynamic, static = eqx.partition(args, eqx.is_array)
        leaves, in_tree = jax.tree.flatten(dynamic)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return None
        # NumPy arrays carry no weak type and keep float64 with x64 off: as JAX arrays,
        # they match what the executable was compiled for.
        leaves = [leaf if isinstance(leaf, jax.Array) else jnp.asarray(leaf) for leaf in leaves]
        static_leaves, static_tree = jax.tree.flatten(static)
        avals = tuple((leaf.shape, leaf.dtype, leaf.weak_type) for leaf in leaves)
        # An executable is compiled for its inputs' devices: the same shapes spread over
        # two devices (a sharded stream) need a program of their own.
        shardings = tuple(leaf.sharding for leaf in leaves)
        try:
            settings = (_x64(), str(user_precision()))
            key = (in_tree, static_tree, tuple(static_leaves), avals, shardings, settings)
            hash(key)
        except TypeError:
            return None
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._build(key, in_tree, static, leaves)
        return entry, leaves

    def cache_size(self) -> int:
        return len(self._entries) + jit_cache_size(self._fallback)

    def clear(self) -> None:
        self._entries.clear()
        clear_jit(self._fallback)

    def _build(self, key, in_tree, static, leaves) -> tuple:
        """The executable for `key` and the structure of its outputs: loaded from disk
        (then the function is only traced, for that structure), else compiled."""
        out_trees = []

        def structured(*leaves):
            return self.function(*eqx.combine(jax.tree.unflatten(in_tree, leaves), static))

        def flat(*leaves):
            out_leaves, out_tree = jax.tree.flatten(structured(*leaves))
            out_trees.append(out_tree)
            return out_leaves

        path = self._path(key)
        if path is not None:
            loaded = _load(path)
            if loaded is not None:
                self.loads += 1
                executable, out_tree = loaded
                if out_tree is None:  # outputs that could not be pickled: traced again
                    out_tree = jax.tree.structure(jax.eval_shape(structured, *leaves))
                return executable, out_tree
        executable = jax.jit(flat).lower(*leaves).compile()
        if path is not None and not _jax_cache_on():
            _store(path, executable, out_trees[-1])
        return executable, out_trees[-1]

    def _path(self, key) -> pathlib.Path | None:
        folder = cache_folder()
        if folder is None or jax.process_count() > 1:
            # (Several processes, `jax.distributed`: an executable is compiled for its
            # process's devices, and one written by a peer fails when run here.)
            return None
        description = repr(key) + self.function.__module__ + self.name
        if _ADDRESS.search(description):  # an object without a stable description
            return None
        digest = hashlib.sha256((description + _environment_key()).encode()).hexdigest()
        return folder / f"{self.name}-{digest[:32]}.bin"


def _jax_cache_on() -> bool:
    """Whether JAX's own persistent cache is on (`nf.enable_compilation_cache`). Then a
    compiled program may come from that cache, and such an executable, serialized again,
    loads but fails when run (XLA CPU: "Function ... not found"); JAX's cache already
    keeps these programs across processes, so the store writes nothing."""
    return bool(jax.config.jax_enable_compilation_cache and jax.config.jax_compilation_cache_dir)


def _x64() -> bool:
    return bool(jax.config.jax_enable_x64)


def stored(function) -> StoredProgram:
    """Decorator: `function` as a `StoredProgram`, registered with `nlsq_fn._evaluation.compiled`
    so that its executables are dropped with nlsq_fn's other programs."""
    from .compiled import register

    return register(StoredProgram(function))


def _lapack_set_up() -> bool:
    """Executables call LAPACK (SVD, QR) through jaxlib's handlers, which JAX sets up
    when it first lowers such a call; a process that only loads would call into handlers
    never set up (a segfault). Set them up, or report that this jaxlib cannot."""
    with _lapack_lock:
        if not _lapack_ready:
            try:
                import jaxlib.lapack

                jaxlib.lapack.prepare_lapack_call("gesdd", np.float64)
            except Exception:
                return False
            _lapack_ready.append(True)
    return True


def set_up_lapack_meanwhile() -> None:
    """Set up LAPACK's handlers in a background thread, for a process's first fit to
    overlap with a compilation it starts next. Setting them up imports SciPy's LAPACK
    wrappers (`scipy.linalg`, about 0.2 s), mostly Python, while XLA's compiler releases
    Python's lock; `_lapack_set_up` in the foreground then waits for the thread."""
    if _lapack_ready or jax.process_count() > 1:
        return
    # Not a daemon: stopped by Python at exit in the middle of an import, it could abort.
    threading.Thread(target=_lapack_set_up, name="nlsq_fn LAPACK set-up").start()


def _load(path: pathlib.Path) -> tuple | None:
    """The executable stored at `path` and the structure of its outputs (None if not
    stored), or None (none there, damaged or stale, or this JAX cannot load it safely):
    then the caller compiles it."""
    if not path.exists() or not _lapack_set_up():
        return None
    try:
        from jax.experimental.serialize_executable import deserialize_and_load

        (payload, in_tree, out_tree), skeleton = pickle.loads(path.read_bytes())
        executable = deserialize_and_load(payload, in_tree, out_tree)
    except Exception:
        return None
    with contextlib.suppress(OSError):
        os.utime(path)  # recently used: trimmed last
    return executable, None if skeleton is None else jax.tree.structure(skeleton)


class _Leaf:
    """A stand-in for each output array in the stored structure of a program's outputs."""


def _skeleton(out_tree):
    """The structure of a program's outputs as a picklable object (its modules, with a
    `_Leaf` for each array), so that a later process need not trace the function again
    to learn it (JAX's tree structures of Equinox modules cannot be pickled); None if
    some part cannot be pickled."""
    skeleton = jax.tree.unflatten(out_tree, [_Leaf()] * out_tree.num_leaves)
    try:  # (a static field that pickles into something unequal would differ too)
        if jax.tree.structure(pickle.loads(pickle.dumps(skeleton))) != out_tree:
            return None
    except Exception:
        return None
    return skeleton


def _store(path: pathlib.Path, executable, out_tree) -> None:
    """Writes `executable` and the structure of its outputs to `path` (whole or not at
    all), then trims the folder. Storing is an optimisation: a read-only or full disk
    must not fail a fit."""
    partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        from jax.experimental.serialize_executable import serialize

        payload = pickle.dumps((serialize(executable), _skeleton(out_tree)))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_bytes(payload)
        os.replace(partial, path)  # readers see a whole entry or none
        with _lock:
            _trim(path.parent)
    except Exception:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)


def _trim(folder: pathlib.Path) -> None:
    entries = []
    for path in folder.glob("*.bin"):
        try:
            status = path.stat()
        except OSError:
            continue
        entries.append((status.st_mtime, status.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries, key=lambda entry: entry[0]):
        if total <= MAX_BYTES:
            break
        path.unlink(missing_ok=True)
        total -= size
