"""nlsq_fn: functional nonlinear least squares and curve fitting for JAX."""

from . import _models as models  # noqa: F401  (nf.models.Gaussian, ...)
from ._batch import (
    init_batch as init_batch,
    pad_datasets as pad_datasets,
    solve_batch as solve_batch,
    with_starts as with_starts,
)
from ._bounds import find_active_constraints as find_active_constraints
from ._cache import enable_compilation_cache as enable_compilation_cache
from ._covariance import covariance_from_jacobian as covariance_from_jacobian
from ._curve_fit import OptimizeWarning as OptimizeWarning, curve_fit as curve_fit
from ._curve_fit_class import CurveFit as CurveFit, FitSolution as FitSolution
from ._data import Data as Data
from ._dogbox import Dogbox as Dogbox
from ._fit_result import CurveFitResult as CurveFitResult
from ._large_data import (
    DatasetStats as DatasetStats,
    LargeDatasetFitter as LargeDatasetFitter,
    LDMemoryConfig as LDMemoryConfig,
    curve_fit_large as curve_fit_large,
    estimate_memory_requirements as estimate_memory_requirements,
    fit_large_dataset as fit_large_dataset,
)
from ._least_squares import least_squares as least_squares
from ._least_squares_class import LeastSquares as LeastSquares
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
from ._multistart import (
    MultiStartResult as MultiStartResult,
    latin_hypercube as latin_hypercube,
    multistart as multistart,
    sample_box as sample_box,
)
from ._optimize_result import OptimizeResult as OptimizeResult
from ._report import Diagnostic as Diagnostic
from ._result import Solution as Solution
from ._sharding import shard_batch as shard_batch, shard_points as shard_points
from ._single_pass import StreamUpdate as StreamUpdate
from ._solve import solve as solve
from ._solver import Solver as Solver, SolverState as SolverState, init as init
from ._sources import (
    AbstractSource as AbstractSource,
    ArraySource as ArraySource,
    CallableSource as CallableSource,
    HDF5Source as HDF5Source,
    NpySource as NpySource,
    PandasSource as PandasSource,
    ParquetSource as ParquetSource,
    SQLSource as SQLSource,
    ZarrSource as ZarrSource,
)
from ._stats import student_t_ppf as student_t_ppf
from ._strategy import AbstractStrategy as AbstractStrategy
from ._streamed_result import StreamedFitResult as StreamedFitResult
from ._streaming import StreamingOptimizer as StreamingOptimizer
from ._trf import TRF as TRF
from ._trust_region import STATUS_MESSAGES as STATUS_MESSAGES

__version__ = "0.1.0"
