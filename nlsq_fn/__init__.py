"""nlsq_fn: functional nonlinear least squares and curve fitting for JAX."""

import importlib
from typing import TYPE_CHECKING

from ._drivers.solve import solve as solve
from ._drivers.solver import Solver as Solver, SolverState as SolverState, init as init
from ._evaluation.linearize import Linearization as Linearization
from ._evaluation.memory import estimate_memory as estimate_memory
from ._frontends.curve_fit import OptimizeWarning as OptimizeWarning, curve_fit as curve_fit
from ._frontends.curve_fit_class import CurveFit as CurveFit, FitSolution as FitSolution
from ._problem.data import Data as Data
from ._problem.loss import (
    AbstractLoss as AbstractLoss,
    Arctan as Arctan,
    Cauchy as Cauchy,
    Huber as Huber,
    Linear as Linear,
    SoftL1 as SoftL1,
)
from ._results.covariance import covariance_from_jacobian as covariance_from_jacobian
from ._results.fit_result import CurveFitResult as CurveFitResult
from ._results.optimize_result import OptimizeResult as OptimizeResult
from ._results.report import Diagnostic as Diagnostic
from ._results.solution import Solution as Solution
from ._results.stats import student_t_ppf as student_t_ppf
from ._strategies.bounds import find_active_constraints as find_active_constraints
from ._strategies.dogbox import Dogbox as Dogbox
from ._strategies.levenberg_marquardt import LevenbergMarquardt as LevenbergMarquardt
from ._strategies.strategy import AbstractStrategy as AbstractStrategy
from ._strategies.trf import TRF as TRF
from ._strategies.trust_region import STATUS_MESSAGES as STATUS_MESSAGES

# The wings a first fit does not need (streaming, batches, multistart, the model
# library) are imported on first use, so that `import nlsq_fn` costs little more than
# importing JAX and Equinox.
_LAZY = {
    "models": ("_models", None),
    "curve_fit_batch": ("_frontends.curve_fit_batch", "curve_fit_batch"),
    "global_fit": ("_frontends.global_fit", "global_fit"),
    "GlobalFitResult": ("_results.global_fit_result", "GlobalFitResult"),
    "global_model": ("_frontends.global_fit", "global_model"),
    "GlobalModel": ("_drivers.block_linearize", "GlobalModel"),
    "global_solve": ("_drivers.block_linearize", "global_solve"),
    "GlobalSolution": ("_results.global_fit_result", "GlobalSolution"),
    "BlockCovariance": ("_strategies.block_arrow", "BlockCovariance"),
    "profile_interval": ("_frontends.profile", "profile_interval"),
    "ProfileInterval": ("_frontends.profile", "ProfileInterval"),
    "odr": ("_frontends.odr", "odr"),
    "ODRResult": ("_frontends.odr", "ODRResult"),
    "odr_solve": ("_drivers.odr_solve", "odr_solve"),
    "ODRSolution": ("_drivers.odr_solve", "ODRSolution"),
    "init_batch": ("_drivers.batch", "init_batch"),
    "pad_datasets": ("_drivers.batch", "pad_datasets"),
    "solve_batch": ("_drivers.batch", "solve_batch"),
    "with_starts": ("_drivers.batch", "with_starts"),
    "enable_compilation_cache": ("_evaluation.cache", "enable_compilation_cache"),
    "MultiStartResult": ("_drivers.multistart", "MultiStartResult"),
    "latin_hypercube": ("_drivers.multistart", "latin_hypercube"),
    "multistart": ("_drivers.multistart", "multistart"),
    "sample_box": ("_drivers.multistart", "sample_box"),
    "shard_batch": ("_evaluation.sharding", "shard_batch"),
    "shard_points": ("_evaluation.sharding", "shard_points"),
    "StreamUpdate": ("_stream.single_pass", "StreamUpdate"),
    "StreamedFitResult": ("_stream.streamed_result", "StreamedFitResult"),
    "StreamingOptimizer": ("_stream.optimizer", "StreamingOptimizer"),
    "LeastSquares": ("_frontends.least_squares_class", "LeastSquares"),
    "least_squares": ("_frontends.least_squares", "least_squares"),
    "TRFLSMR": ("_strategies.lsmr_trf", "TRFLSMR"),
    "DogboxLSMR": ("_strategies.lsmr_dogbox", "DogboxLSMR"),
    "jac_sparsity": ("_evaluation.sparse_jacobian", "jac_sparsity"),
    "selected_variances": ("_results.selected_variances", "selected_variances"),
    "covariance_memory": ("_results.selected_variances", "covariance_memory"),
    **{
        name: ("_stream.large_data", name)
        for name in (
            "DatasetStats",
            "LargeDatasetFitter",
            "LDMemoryConfig",
            "curve_fit_large",
            "estimate_memory_requirements",
            "fit_large_dataset",
        )
    },
    **{
        name: ("_stream.sources", name)
        for name in ("AbstractSource", "ArraySource", "CallableSource", "NpySource")
    },
    **{
        name: ("_stream.library_sources", name)
        for name in ("HDF5Source", "PandasSource", "ParquetSource", "SQLSource", "ZarrSource")
    },
}


def __getattr__(name: str):
    if name == "__version__":  # from the installed package's metadata, read on first use
        from importlib.metadata import version

        globals()[name] = release = version("nlsq_fn")
        return release
    if name not in _LAZY:
        raise AttributeError(f"module 'nlsq_fn' has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})


if TYPE_CHECKING:
    __version__: str
    from . import _models as models  # noqa: F401
    from ._drivers.batch import init_batch, pad_datasets, solve_batch, with_starts  # noqa: F401
    from ._drivers.block_linearize import GlobalModel, global_solve  # noqa: F401
    from ._drivers.multistart import (  # noqa: F401
        MultiStartResult,
        latin_hypercube,
        multistart,
        sample_box,
    )
    from ._drivers.odr_solve import ODRSolution, odr_solve  # noqa: F401
    from ._evaluation.cache import enable_compilation_cache  # noqa: F401
    from ._evaluation.sharding import shard_batch, shard_points  # noqa: F401
    from ._evaluation.sparse_jacobian import jac_sparsity  # noqa: F401
    from ._frontends.curve_fit_batch import curve_fit_batch  # noqa: F401
    from ._frontends.global_fit import global_fit, global_model  # noqa: F401
    from ._frontends.least_squares import least_squares  # noqa: F401
    from ._frontends.least_squares_class import LeastSquares  # noqa: F401
    from ._frontends.odr import ODRResult, odr  # noqa: F401
    from ._frontends.profile import ProfileInterval, profile_interval  # noqa: F401
    from ._results.global_fit_result import (
        GlobalFitResult,  # noqa: F401
        GlobalSolution,  # noqa: F401
    )
    from ._results.selected_variances import covariance_memory, selected_variances  # noqa: F401
    from ._strategies.block_arrow import BlockCovariance  # noqa: F401
    from ._strategies.lsmr_dogbox import DogboxLSMR  # noqa: F401
    from ._strategies.lsmr_trf import TRFLSMR  # noqa: F401
    from ._stream.large_data import (  # noqa: F401
        DatasetStats,
        LargeDatasetFitter,
        LDMemoryConfig,
        curve_fit_large,
        estimate_memory_requirements,
        fit_large_dataset,
    )
    from ._stream.library_sources import (  # noqa: F401
        HDF5Source,
        PandasSource,
        ParquetSource,
        SQLSource,
        ZarrSource,
    )
    from ._stream.optimizer import StreamingOptimizer  # noqa: F401
    from ._stream.single_pass import StreamUpdate  # noqa: F401
    from ._stream.sources import AbstractSource, ArraySource, CallableSource, NpySource  # noqa: F401
    from ._stream.streamed_result import StreamedFitResult  # noqa: F401
