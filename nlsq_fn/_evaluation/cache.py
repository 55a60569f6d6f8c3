"""JAX's persistent compilation cache, switched on in one call.

A fresh process pays XLA's compilation on its first fit (seconds); with the cache on,
compiled programs are written to disk and the next process with the same fit (same
shapes, options, JAX version and machine) loads them instead of compiling.
"""

import os
import pathlib

import jax

# Where the cache goes by default: this environment variable, else a user cache folder.
CACHE_ENV = "NLSQ_FN_COMPILATION_CACHE"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Store XLA's compiled programs in `path` and reuse them across processes.

    `path` defaults to the environment variable ``NLSQ_FN_COMPILATION_CACHE``, else
    ``~/.cache/nlsq_fn/jax``. Every program is cached, however fast it compiled (JAX's
    own default keeps only those that took over a second, which a fit's kernels never
    do). Call it once, before the first fit; returns the folder used. The cache is
    JAX's (``jax_compilation_cache_dir``): it holds every JAX computation of the
    process, not only nlsq_fn's, and entries are keyed by JAX version and device.
    """
    if path is None:
        path = os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache/nlsq_fn/jax"
    path = pathlib.Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
