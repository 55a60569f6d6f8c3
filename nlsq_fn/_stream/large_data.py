"""NLSQ's large-data names over nlsq_fn's own machinery: `LDMemoryConfig`,
`estimate_memory_requirements` (a `DatasetStats` from `estimate_memory`),
`LargeDatasetFitter` / `fit_large_dataset` / `curve_fit_large`.

Data that fit in one chunk are fitted by `curve_fit`; larger data by
`StreamingOptimizer` over the arrays in chunks, which is the exact fit (each evaluation a
pass over all chunks), not NLSQ's approximation from per-chunk fits, so the result is
the in-memory fit's up to rounding. A chunk holds as many points as `memory_limit_gb`
(times `safety_factor`) allows by `estimate_memory`'s float64 estimate, between
`min_chunk_size` and `max_chunk_size`.
"""

import dataclasses
import math

import numpy as np

from .._evaluation.memory import as_positive_int, estimate_memory


@dataclasses.dataclass
class LDMemoryConfig:
    """NLSQ's configuration of a large-data fit (the fields nlsq_fn uses; NLSQ's other
    keywords are accepted in `extra` and change nothing)."""

    memory_limit_gb: float = 8.0
    safety_factor: float = 0.8
    min_chunk_size: int = 1_000
    max_chunk_size: int = 1_000_000
    extra: dict = dataclasses.field(default_factory=dict)

    def __init__(
        self,
        memory_limit_gb=8.0,
        safety_factor=0.8,
        min_chunk_size=1_000,
        max_chunk_size=1_000_000,
        **extra,
    ):
        if not memory_limit_gb > 0:
            raise ValueError(f"`memory_limit_gb` must be positive, got {memory_limit_gb!r}.")
        if not 0 < safety_factor <= 1:
            raise ValueError(f"`safety_factor` must be in (0, 1], got {safety_factor!r}.")
        self.memory_limit_gb = float(memory_limit_gb)
        self.safety_factor = float(safety_factor)
        self.min_chunk_size = as_positive_int(min_chunk_size, "min_chunk_size")
        self.max_chunk_size = as_positive_int(max_chunk_size, "max_chunk_size")
        if self.min_chunk_size > self.max_chunk_size:
            raise ValueError("`min_chunk_size` must not exceed `max_chunk_size`.")
        interval = extra.get("gc_chunk_interval")
        if interval is not None:  # NLSQ's garbage-collection period: checked, unused here
            as_positive_int(interval, "gc_chunk_interval")
        self.extra = extra


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """What `estimate_memory_requirements` returns (NLSQ's fields)."""

    n_points: int
    n_params: int
    memory_per_point_bytes: float
    total_memory_estimate_gb: float
    recommended_chunk_size: int
    n_chunks: int


def _chunk_size(n_points: int, n_params: int, config: LDMemoryConfig) -> int:
    per_point = estimate_memory(1, n_params, "float64")["total_gb"] * 1e9
    fitting = int(config.memory_limit_gb * 1e9 * config.safety_factor / per_point)
    size = min(config.max_chunk_size, max(config.min_chunk_size, fitting))
    return min(n_points, size)


def estimate_memory_requirements(n_points, n_params, config: LDMemoryConfig | None = None):
    """Memory of a float64 fit of `n_points` points and `n_params` parameters
    (`estimate_memory`'s total) and the chunking a `LargeDatasetFitter` with `config`
    would use, as a `DatasetStats`."""
    n_points = as_positive_int(n_points, "n_points")
    n_params = as_positive_int(n_params, "n_params")
    config = config or LDMemoryConfig()
    total = estimate_memory(n_points, n_params, "float64")["total_gb"]
    chunk = _chunk_size(n_points, n_params, config)
    return DatasetStats(
        n_points=n_points,
        n_params=n_params,
        memory_per_point_bytes=total * 1e9 / n_points,
        total_memory_estimate_gb=total,
        recommended_chunk_size=chunk,
        n_chunks=math.ceil(n_points / chunk),
    )


def _checked_data(xdata, ydata, sigma):
    xdata, ydata = np.asarray(xdata, dtype=float), np.asarray(ydata, dtype=float)
    if ydata.ndim != 1:
        raise ValueError(f"`ydata` must be 1-D for a large-data fit, got shape {ydata.shape}.")
    if xdata.ndim == 0 or xdata.shape[-1] != ydata.size:
        raise ValueError(f"`xdata` has shape {xdata.shape} but `ydata` has {ydata.size} points.")
    if ydata.size < 2:
        raise ValueError(f"A fit needs at least 2 points, got {ydata.size}.")
    if sigma is not None:
        sigma = np.asarray(sigma, dtype=float)
        if sigma.ndim == 1 and sigma.size != ydata.size:
            raise ValueError(
                f"`sigma` has {sigma.size} values but `ydata` has {ydata.size} points "
                "(sigma length must match)."
            )
    return xdata, ydata, sigma


class LargeDatasetFitter:
    """NLSQ's large-data fitter: ``LargeDatasetFitter(memory_limit_gb=...)`` or
    ``LargeDatasetFitter(config=LDMemoryConfig(...))``, then
    ``fit(f, xdata, ydata, p0, bounds=..., sigma=..., **curve_fit_options)``."""

    def __init__(
        self,
        memory_limit_gb: float | None = None,
        config: LDMemoryConfig | None = None,
        **nlsq_options,
    ):
        del nlsq_options  # NLSQ's sampling / progress / diagnostics switches
        if config is None:
            config = LDMemoryConfig(
                memory_limit_gb=8.0 if memory_limit_gb is None else memory_limit_gb
            )
        elif memory_limit_gb is not None:
            config = LDMemoryConfig(
                memory_limit_gb,
                config.safety_factor,
                config.min_chunk_size,
                config.max_chunk_size,
                **config.extra,
            )
        self.config = config

    def get_memory_recommendations(self, n_points, n_params) -> dict:
        """NLSQ's recommendation dict: ``processing_strategy`` ("single_chunk" or
        "chunked") and ``recommendations`` (``chunk_size``, ``n_chunks``)."""
        stats = estimate_memory_requirements(n_points, n_params, self.config)
        return dict(
            processing_strategy="single_chunk" if stats.n_chunks == 1 else "chunked",
            recommendations=dict(
                chunk_size=stats.recommended_chunk_size,
                n_chunks=stats.n_chunks,
                total_memory_estimate_gb=stats.total_memory_estimate_gb,
            ),
            dataset_stats=stats,
        )

    def fit(
        self,
        f,
        xdata,
        ydata,
        p0=None,
        bounds=(-np.inf, np.inf),
        sigma=None,
        absolute_sigma=False,
        method=None,
        **kwargs,
    ):
        """The fit of all the data: `CurveFit` when they fit in one chunk, else the
        exact chunked fit of `StreamingOptimizer`. Returns a `CurveFitResult`
        (unpacks as ``popt, pcov``; a chunked one also has ``n_chunks``) and, like
        `CurveFit.fit`, does not raise when the fit fails (check ``result.success``)."""
        for name in ("show_progress", "solver", "timeit", "callback_every"):
            kwargs.pop(name, None)
        xdata, ydata, sigma = _checked_data(xdata, ydata, sigma)
        n_params = np.size(p0) if p0 is not None else 1
        chunk = _chunk_size(ydata.size, n_params, self.config)
        if chunk >= ydata.size:
            from .._frontends.curve_fit_class import CurveFit

            return CurveFit(
                f, xdata, ydata, p0, sigma, absolute_sigma, bounds, method, **kwargs
            ).fit()
        if sigma is not None and sigma.ndim != 1:
            raise ValueError(
                "A 2-D covariance sigma cannot be split into chunks: give 1-D standard "
                "deviations, or a memory limit that holds all the points."
            )
        from .optimizer import StreamingOptimizer
        from .sources import ArraySource

        optimizer = StreamingOptimizer(
            f,
            p0,
            chunk_size=chunk,
            bounds=bounds,
            method=method,
            absolute_sigma=absolute_sigma,
            verbose=0,
            **kwargs,
        )
        result = optimizer.fit(ArraySource(xdata, ydata, sigma))
        result.n_chunks = math.ceil(ydata.size / chunk)
        return result

    fit_with_progress = fit  # progress goes to a bar / logger in NLSQ; same fit here


def fit_large_dataset(f, xdata, ydata, p0=None, memory_limit_gb=None, **kwargs):
    """``LargeDatasetFitter(memory_limit_gb).fit(f, xdata, ydata, p0, **kwargs)``."""
    return LargeDatasetFitter(memory_limit_gb=memory_limit_gb).fit(f, xdata, ydata, p0, **kwargs)


def curve_fit_large(
    f,
    xdata,
    ydata,
    p0=None,
    sigma=None,
    absolute_sigma=False,
    check_finite=True,
    bounds=(-np.inf, np.inf),
    method=None,
    memory_limit_gb=None,
    **kwargs,
):
    """NLSQ's ``curve_fit_large``: `curve_fit`'s arguments plus `memory_limit_gb`;
    the result unpacks as ``popt, pcov``; a failed fit raises `RuntimeError` as in
    `curve_fit`."""
    if check_finite:
        for name, values in (("xdata", xdata), ("ydata", ydata)):
            if not np.all(np.isfinite(np.asarray(values, dtype=float))):
                raise ValueError(f"`{name}` must not contain infs or NaNs.")
    kwargs.pop("auto_size_detection", None)
    result = LargeDatasetFitter(memory_limit_gb=memory_limit_gb).fit(
        f,
        xdata,
        ydata,
        p0,
        bounds=bounds,
        sigma=sigma,
        absolute_sigma=absolute_sigma,
        method=method,
        **kwargs,
    )
    if not result.success:  # as curve_fit (SciPy's)
        raise RuntimeError("Optimal parameters not found: " + result.message)
    return result
