"""How a streamed fit evaluates its chunks: `StreamEngine`.

`StreamingOptimizer.fit` (a pass over a source per evaluation) and `update` (a stream
seen once, `_stream.single_pass`) share it: the validated configuration from the first chunk
(`CurveFit`'s model conventions and checks), the chunk size, chunks padded to one shape
and placed on their devices, and the summary (cost, gradient, Jacobian factor) of a
sequence of chunks at ``x``, with the check that the model is pointwise; for `fit`, a
pass over a source (each process's share) and the check that every pass reads the same
data.
"""

import os
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._drivers.chunks import (
    PassSummary,
    Sums,
    finish_compiled,
    fold_chunk,
    fold_compiled,
    padded_chunks,
    prefetch,
)
from .._drivers.linearize_at import problem_of
from .._drivers.solver import SolverState, init
from .._evaluation import sharding as _sharding
from .._evaluation.chunking import auto_chunk_size, pointwise_mismatch
from .._evaluation.linearize import Linearization
from .._frontends.curve_fit_class import CurveFit
from .._frontends.curve_fit_inputs import convention, core_solver, flat_bounds, initial_params
from .._problem.data import Data
from .._results.fit_result import CurveFitResult
from .._strategies.strategy import Problem
from . import processes as _processes
from .fixed_chunks import fixed_chunks
from .sources import AbstractSource
from .streamed_result import streamed_result


def _flagged(mismatch) -> bool:
    """Whether a chunk's `pointwise_mismatch` (or the error it raised) refuses it."""
    return isinstance(mismatch, Exception) or bool(mismatch)


class StreamEngine:
    """The evaluation of a streamed fit of `fitter`'s model and options, its chunks
    split over `mesh`'s devices (None: the default device). `model` and `names` are
    set by `state` (the model as `CurveFit` reads it, and its parameter names)."""

    def __init__(self, fitter: CurveFit, mesh=None):
        self.fitter = fitter
        self.mesh = mesh
        self.model: Any = None
        self.names: tuple[str, ...] | None = None

    def chunk_size(self, given, n_params, dtype, n_points=None) -> int:
        """The chunk size to use for `given` (`StreamingOptimizer.chunk_size`: None,
        ``"auto"`` or a count) and `n_params` parameters of `dtype`."""
        size: Any = given  # None, "auto" or a count
        if size is None or size == "auto":
            size = auto_chunk_size(n_points, n_params, dtype, streamed=True)
        if self.mesh is not None:  # an equal share of every chunk for each device
            n_devices = self.mesh.devices.size
            size = -(-size // n_devices) * n_devices
        return size

    def state(self, first: Data, p0, factorization: str) -> SolverState:
        """Validated configuration, from the first chunk (checks the model's output)."""
        fitter = self.fitter
        # CurveFit's rule for the model's convention (SciPy's f(x, *p), the guide's
        # model(x, params), named models), so both optimizers read a model alike.
        style, model, names = convention(fitter.f, p0, fitter.param_style)
        p0 = initial_params(fitter.f, p0, np.asarray(first.x), np.asarray(first.y), style, names)
        names = names or tuple(f"p{i}" for i in range(p0.size))
        bounds = flat_bounds(fitter.bounds, names)
        solver = core_solver(
            fitter,
            bounds,
            style,
            factorization=factorization,
            chunk_size=None,  # the chunks are this optimizer's own
        )
        if not fitter.strategy.steps_from_host:
            raise ValueError(f"{type(fitter.strategy).__name__} cannot be driven from a host loop.")
        if getattr(fitter.strategy, "matrix_free", False):
            raise NotImplementedError(
                f"{type(fitter.strategy).__name__} (matrix-free) in a streamed fit is not "
                "implemented: each Jacobian product would be a pass over the data."
            )
        try:
            state = init(model, first, p0, solver)
        except ValueError as error:
            raise ValueError(
                str(error).replace("`y`", "the chunk's `y`").replace("`x`", "the chunk's `x`")
            ) from error
        if state.host_model:  # the chunks are folded inside compiled code
            raise ValueError(
                "StreamingOptimizer needs a model written with jax.numpy: this one "
                "could not be traced by JAX (it uses NumPy or SciPy functions). Rewrite "
                "it with jax.numpy, or fit in-memory data with CurveFit / curve_fit, which "
                "run such a model on the host."
            )
        self.names = names
        self.model = model
        return state

    def problem(self, state: SolverState, n_points) -> Problem:
        return problem_of(state, jnp.asarray(n_points, jnp.result_type(int)))

    def chunks(self, chunks, chunk_size, dtype, read_ahead=True):
        """`chunks` (of at most `chunk_size` points) padded to one shape as `Data`, on
        their devices, read ahead in a thread."""
        chunks = padded_chunks(chunks, chunk_size, dtype)
        if self.mesh is not None:
            chunks = (_sharding.place_chunk(chunk, self.mesh) for chunk in chunks)
        return prefetch(chunks) if read_ahead else chunks

    def summarize(
        self, chunks, state, x, bar=None, *, across_processes=False, check_pointwise=False
    ) -> tuple[Linearization, Sums]:
        """The summary at `x` of all `chunks` (and, `across_processes`, of the other
        processes' chunks), and the sums of their residuals. `check_pointwise`: first
        make sure the model is pointwise on every chunk (`pointwise_mismatch`)."""
        running = PassSummary.zeros(x.size, state.lower.dtype)
        if self.mesh is not None:
            running = _sharding.sharded_zeros(running, self.mesh)
        mismatches = []
        # Alone, a model that is not pointwise stops the pass at once (the previous
        # chunk's result, computed by now); processes agree at the end of the pass.
        early = check_pointwise and not (across_processes and _processes.several())
        for chunk in chunks:
            if check_pointwise:
                mismatches.append(self.pointwise_mismatch(x, chunk))
                if early and len(mismatches) > 1 and _flagged(mismatches[-2]):
                    self.raise_unless_pointwise(mismatches[:-1])
            if self.mesh is None:
                running = fold_compiled(running, self.model, state, x, chunk)
            else:
                running = _sharding.sharded_fold(
                    fold_chunk, running, self.model, state, x, chunk, self.mesh
                )
            if bar is not None:
                bar.update(1)
        if check_pointwise:
            self.raise_unless_pointwise(mismatches, across_processes)
        if self.mesh is not None:
            running = _sharding.reduce_devices(running, state.factorization)
        if across_processes:
            running = _processes.combine(running, state.factorization)
        return finish_compiled(running, state.factorization), running.sums

    def pointwise_mismatch(self, x, chunk):
        """`pointwise_mismatch` of one chunk (an error the model raises on half a chunk
        says the same)."""
        if chunk.y.shape[0] < 2:
            return False
        try:
            return pointwise_mismatch(self.model, x, chunk)
        except Exception as error:  # noqa: BLE001 - re-raised with its chunk
            return error

    def raise_unless_pointwise(self, mismatches, across_processes=False) -> None:
        """The error for a model that gives other values on a chunk than on its halves
        (`pointwise_mismatch`, one result per chunk of the pass): the chunked
        evaluation of a stream would change the fit."""
        bad = next((i for i, m in enumerate(mismatches) if _flagged(m)), None)
        anywhere = bad is not None
        if across_processes and _processes.several():
            # Every process raises, or some would wait for the others' summaries.
            anywhere = _processes.any_process(anywhere)
        if not anywhere:
            return
        cause = mismatches[bad] if bad is not None else None
        cause = cause if isinstance(cause, Exception) else None
        where = "another process's chunk" if bad is None else f"chunk {bad} (0-based) of the pass"
        raised = f" (it raised {type(cause).__name__}: {cause})" if cause else ""
        raise ValueError(
            f"The model is not pointwise, so its data cannot be streamed: on {where} it "
            f"gives other values on the whole chunk than on its two halves{raised}. It "
            "uses `x` as a whole (e.g. x.mean(), x.max(), x.size, a cumulative sum or a "
            "convolution), so a fit chunk by chunk would change the answer. Fit the data "
            "in memory instead (nf.CurveFit or nf.curve_fit), or pass such a statistic of "
            "all the data to the model as a constant."
        ) from cause

    def pass_over(
        self, source: AbstractSource, state, x, chunk_size, bar, split, check_pointwise=False
    ) -> tuple:
        """One pass: the summary at `x` and the sums of its residuals (of all
        processes' shares)."""
        chunks = self.chunks(
            _processes.share(source, chunk_size, split),
            chunk_size,
            state.lower.dtype,
            source.read_ahead,
        )
        lin, sums = self.summarize(
            chunks, state, x, bar, across_processes=True, check_pointwise=check_pointwise
        )
        if float(sums.n_points) == 0:
            raise ValueError("The source gave no data points.")
        return lin, sums

    @staticmethod
    def first_chunk(source, dtype) -> Data:
        for x, y, sigma in fixed_chunks(source.pieces(), 1 << 12):
            return Data(
                np.asarray(x, dtype),
                np.asarray(y, dtype),
                sigma=None if sigma is None else np.asarray(sigma, dtype),
            )
        raise ValueError("The source gave no data points.")

    def result(self, state, problem, carry, sums, initial_cost) -> CurveFitResult:
        """The `CurveFitResult` of the fit ending at `carry` (its summary)."""
        return streamed_result(self, state, problem, carry, sums, initial_cost)


def check_same_data(first: Sums, sums: Sums, number: int, checkpoint=None) -> None:
    """The error for a pass whose data differ from the first pass's: a source that
    lost, gained or changed rows between passes would give a mixture of fits."""
    differences = first.data_differences(sums)
    if not differences:
        return
    shown = ", ".join(
        f"{name} {float(getattr(sums, name)):,.17g} (first pass: "
        f"{float(getattr(first, name)):,.17g})"
        for name in differences
    )
    origin = (
        ""
        if checkpoint is None
        else f" The first pass is that of the fit that saved the checkpoint "
        f"{os.fspath(checkpoint)!r}: a fit of other data? Delete it to start afresh."
    )
    raise ValueError(
        f"Pass {number} read other data than the first pass: {shown}. The source "
        "changed between passes (rows lost, added or changed), and every pass must "
        f"read the same data.{origin}"
    )
