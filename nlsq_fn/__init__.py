"""nlsq_fn: functional nonlinear least squares and curve fitting for JAX."""

import importlib
from typing import TYPE_CHECKING

from ._bounds import find_active_constraints as find_active_constraints
from ._covariance import covariance_from_jacobian as covariance_from_jacobian
from ._curve_fit import OptimizeWarning as OptimizeWarning, curve_fit as curve_fit
from ._curve_fit_class import CurveFit as CurveFit, FitSolution as FitSolution
from ._data import Data as Data
from ._dogbox import Dogbox as Dogbox
from ._fit_result import CurveFitResult as CurveFitResult
from ._least_squares import least_squares as least_squares
from ._levenberg_marquardt import LevenbergMarquardt as LevenbergMarquardt
from ._linearize import Linearization as Linearization
from ._loss import (
    AbstractLoss as AbstractLoss,
    Arctan as Arctan,
    Cauchy as Cauchy,
    Huber as Huber,
    Linear as Linear,
    SoftL1 as SoftL1,
)
from ._memory import estimate_memory as estimate_memory
from ._optimize_result import OptimizeResult as OptimizeResult
from ._report import Diagnostic as Diagnostic
from ._result import Solution as Solution
from ._solve import solve as solve
from ._solver import Solver as Solver, SolverState as SolverState, init as init
from ._stats import student_t_ppf as student_t_ppf
from ._strategy import AbstractStrategy as AbstractStrategy
from ._trf import TRF as TRF
from ._trust_region import STATUS_MESSAGES as STATUS_MESSAGES

# The wings a first fit does not need (streaming, batches, multistart, the model
# library) are imported on first use, so that `import nlsq_fn` costs little more than
# importing JAX and Equinox.
_LAZY = {
    "models": ("_models", None),
    "curve_fit_batch": ("_curve_fit_batch", "curve_fit_batch"),
    "global_fit": ("_global_fit", "global_fit"),
    "GlobalFitResult": ("_global_fit_result", "GlobalFitResult"),
    "global_model": ("_global_fit", "global_model"),
    "GlobalModel": ("_block_linearize", "GlobalModel"),
    "global_solve": ("_block_linearize", "global_solve"),
    "GlobalSolution": ("_block_linearize", "GlobalSolution"),
    "BlockCovariance": ("_block_arrow", "BlockCovariance"),
    "profile_interval": ("_profile", "profile_interval"),
    "ProfileInterval": ("_profile", "ProfileInterval"),
    "odr": ("_odr", "odr"),
    "ODRResult": ("_odr", "ODRResult"),
    "init_batch": ("_batch", "init_batch"),
    "pad_datasets": ("_batch", "pad_datasets"),
    "solve_batch": ("_batch", "solve_batch"),
    "with_starts": ("_batch", "with_starts"),
    "enable_compilation_cache": ("_cache", "enable_compilation_cache"),
    "MultiStartResult": ("_multistart", "MultiStartResult"),
    "latin_hypercube": ("_multistart", "latin_hypercube"),
    "multistart": ("_multistart", "multistart"),
    "sample_box": ("_multistart", "sample_box"),
    "shard_batch": ("_sharding", "shard_batch"),
    "shard_points": ("_sharding", "shard_points"),
    "StreamUpdate": ("_single_pass", "StreamUpdate"),
    "StreamedFitResult": ("_streamed_result", "StreamedFitResult"),
    "StreamingOptimizer": ("_streaming", "StreamingOptimizer"),
    "LeastSquares": ("_least_squares_class", "LeastSquares"),
    "TRFLSMR": ("_lsmr_trf", "TRFLSMR"),
    "DogboxLSMR": ("_lsmr_dogbox", "DogboxLSMR"),
    "jac_sparsity": ("_sparse_jacobian", "jac_sparsity"),
    "selected_variances": ("_selected_variances", "selected_variances"),
    "covariance_memory": ("_selected_variances", "covariance_memory"),
    **{
        name: ("_large_data", name)
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
        name: ("_sources", name)
        for name in ("AbstractSource", "ArraySource", "CallableSource", "NpySource")
    },
    **{
        name: ("_library_sources", name)
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
    from ._batch import init_batch, pad_datasets, solve_batch, with_starts  # noqa: F401
    from ._block_arrow import BlockCovariance  # noqa: F401
    from ._block_linearize import GlobalModel, GlobalSolution, global_solve  # noqa: F401
    from ._cache import enable_compilation_cache  # noqa: F401
    from ._curve_fit_batch import curve_fit_batch  # noqa: F401
    from ._global_fit import global_fit, global_model  # noqa: F401
    from ._global_fit_result import GlobalFitResult  # noqa: F401
    from ._large_data import (  # noqa: F401
        DatasetStats,
        LargeDatasetFitter,
        LDMemoryConfig,
        curve_fit_large,
        estimate_memory_requirements,
        fit_large_dataset,
    )
    from ._least_squares_class import LeastSquares  # noqa: F401
    from ._library_sources import (  # noqa: F401
        HDF5Source,
        PandasSource,
        ParquetSource,
        SQLSource,
        ZarrSource,
    )
    from ._lsmr_dogbox import DogboxLSMR  # noqa: F401
    from ._lsmr_trf import TRFLSMR  # noqa: F401
    from ._multistart import (  # noqa: F401
        MultiStartResult,
        latin_hypercube,
        multistart,
        sample_box,
    )
    from ._odr import ODRResult, odr  # noqa: F401
    from ._profile import ProfileInterval, profile_interval  # noqa: F401
    from ._selected_variances import covariance_memory, selected_variances  # noqa: F401
    from ._sharding import shard_batch, shard_points  # noqa: F401
    from ._single_pass import StreamUpdate  # noqa: F401
    from ._sources import AbstractSource, ArraySource, CallableSource, NpySource  # noqa: F401
    from ._sparse_jacobian import jac_sparsity  # noqa: F401
    from ._streamed_result import StreamedFitResult  # noqa: F401
    from ._streaming import StreamingOptimizer  # noqa: F401
