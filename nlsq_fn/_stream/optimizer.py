"""``StreamingOptimizer``: exact fits of data read from a source, pass by pass.

The strategies only see the ``n``-sized summary of the linearised problem (cost,
gradient, Jacobian factor). Here that summary is computed by a host loop over the
chunks of a source: each evaluation is one pass, chunks are padded to one shape (so one
compiled program serves them all) and read by a background thread while the previous
chunk is computed. The trust-region iterations are the strategy's own `propose` and
`judge` (the same code `solve` runs inside its compiled loop), driven from Python, and
the state between iterations is a pytree that is checkpointed to disk after each one
(`_drivers.host_loop`). The chunks' evaluation (configuration, padding, devices, the pointwise
check, one pass) is `_stream.engine`'s; devices split each chunk (`_evaluation.sharding`),
processes split the source (`_stream.processes`); the single-pass `update` lives in
`_stream.single_pass`, the result built in `_stream.streamed_result`.
"""

import os
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from .._drivers.fingerprint import fingerprint
from .._drivers.host_loop import (
    FitCheckpoint,
    checkpoint_like,
    host_iterations,
    load_checkpoint,
    save_checkpoint,
    start_loop,
)
from .._drivers.solver import SolverState
from .._drivers.start import start_point
from .._evaluation import sharding as _sharding
from .._evaluation.compiled import limit_programs
from .._evaluation.memory import as_chunk_size
from .._frontends.curve_fit_class import CurveFit
from .._misc import optional_import, tree_where
from .._problem.data import Data
from .._problem.host_errors import reraise_host_errors
from .._results.fit_result import CurveFitResult
from .._strategies.trust_region import RUNNING
from . import processes as _processes
from .engine import StreamEngine, check_same_data
from .single_pass import StreamUpdate, stream_result, update_stream
from .sources import as_source


class StreamingOptimizer:
    """Fits of data too large for memory, read chunk by chunk (NLSQ's class).

    ``StreamingOptimizer(model, p0, chunk_size=100_000, bounds=..., method="trf",
    loss="huber", ftol=..., xtol=..., gtol=...)`` takes the model and options of
    `CurveFit` (SciPy-style ``f(x, a, b, ...)`` or a model of `nlsq_fn.models`). Two
    ways to use it:

    - ``fit(source)``: the exact least-squares fit. Each evaluation of the cost,
      gradient and Jacobian factor is one pass over `source` (arrays, a ``.npy`` memory
      map, HDF5, Zarr, Parquet, SQL, pandas chunks or a callable returning a fresh
      iterator of ``(x, y[, sigma])``), in chunks of `chunk_size` points; the trust-region
      iterations are those of `CurveFit` (same strategy code), so the result equals the
      in-memory fit up to rounding. With ``checkpoint="fit.eqx"`` the state is saved
      after every iteration and an interrupted fit resumes from it.
    - ``update(x_chunk, y_chunk)``: a stream seen once (see `update`), then `result()`.

    `chunk_size` may be lowered at any time (e.g. after an out-of-memory error); each
    new size compiles once. None or ``"auto"`` chooses it from the available memory
    (`nlsq_fn.estimate_memory`). `verbose`: None (default) shows a tqdm progress bar
    (extra ``progress``) when one is installed and a pass takes more than two seconds,
    0 is silent, 1 always shows it. `devices`: None (the default device), or a list of
    devices (or a one-axis `jax.sharding.Mesh` named ``"points"``) to split every chunk
    over: each device folds its share into its own summary, combined once per pass.

    Under `jax.distributed` (several processes, each with its own devices), `fit`
    splits the points over the processes (see `fit`'s `split`) and combines their
    summaries once per pass with JAX's collectives: every process takes the same steps
    and returns the same result. `update` stays local to its process.
    """

    def __init__(
        self,
        model: Callable,
        p0,
        chunk_size: int | None = 100_000,
        *,
        bounds=(-np.inf, np.inf),
        method: str | None = None,
        loss="linear",
        f_scale: float = 1.0,
        x_scale=None,
        jac=None,
        ftol: float = 1e-8,
        xtol: float = 1e-8,
        gtol: float = 1e-8,
        max_nfev: int | None = None,
        absolute_sigma: bool = False,
        factorization: str = "qr",
        verbose: int | None = None,
        devices=None,
    ):
        # The front end's own configuration: same model conventions, defaults, checks.
        fitter = CurveFit(
            model,
            p0=p0,
            bounds=bounds,
            method=method,
            loss=loss,
            f_scale=f_scale,
            x_scale=x_scale,
            jac=jac,
            ftol=ftol,
            xtol=xtol,
            gtol=gtol,
            max_nfev=max_nfev,
            absolute_sigma=absolute_sigma,
        )
        if verbose not in (None, 0, 1):
            raise ValueError(f"`verbose` must be None, 0 or 1, got {verbose!r}.")
        if factorization not in ("qr", "normal"):
            raise ValueError(f"`factorization` must be 'qr' or 'normal', got {factorization!r}.")
        self.p0 = p0
        self.chunk_size = chunk_size
        self.factorization = factorization
        self.verbose = verbose
        self.method = fitter.method
        mesh = None if devices is None else _sharding.points_mesh(devices)
        self._engine = StreamEngine(fitter, mesh)
        self._reset_stream()

    # ----------------------------------------------------------------- set-up

    @property
    def chunk_size(self) -> int | str | None:
        return self._chunk_size_given

    @chunk_size.setter
    def chunk_size(self, value):
        self._chunk_size_given = as_chunk_size(value)

    def _state(self, first: Data) -> SolverState:
        """Validated configuration from the first chunk; `names` are then known."""
        state = self._engine.state(first, self.p0, self.factorization)
        self.names = self._engine.names
        return state

    # ----------------------------------------------------------------- exact fit

    def _fingerprint(self, state) -> dict:
        """What a checkpoint must share with this fit to be resumed by it (the data are
        compared by their sums in every pass; `max_nfev` may grow)."""
        fitter = self._engine.fitter
        return {
            "model": fitter.f,
            "Jacobian (`jac`)": fitter.jac,
            "`p0`": state.params,  # as given, not moved inside the bounds
            "loss": state.loss,
            "method": state.strategy,
            "`bounds`": (state.lower, state.upper),
            "`x_scale`": state.x_scale,
            "tolerances": (state.ftol, state.xtol, state.gtol),
            "factorization": state.factorization,
        }

    @reraise_host_errors
    def fit(
        self, source, checkpoint: str | os.PathLike | None = None, *, split: bool = True
    ) -> CurveFitResult:
        """The exact fit of all the data in `source` (each evaluation one pass over it).

        With `checkpoint` (a file path), the fit's state is saved there after each
        iteration; if the file exists, the fit resumes from it. It must be a checkpoint
        of the same fit: the same model, `p0`, loss, bounds and options (else a
        ValueError names what differs) and the same data (compared by their sums in the
        next pass); a fit stopped by `max_nfev` continues when `max_nfev` is now larger.
        Every pass must read the same data as the first (a ValueError if its count or
        sums differ), and the model must be pointwise (checked on every chunk of the
        first pass). Returns a `CurveFitResult` like `CurveFit.fit` (no per-point
        residuals: statistics come from sums over the last pass).

        Under `jax.distributed` every process calls `fit`, and the result is the fit of
        all processes' points. `split`: True (default) when every process passes the
        same `source`: each takes its share, one contiguous block of rows for arrays
        and `.npy` files (read only by that process), every ``process_count``-th chunk
        for other sources (read by every process, folded by one). False when each
        process passes its own part of the data (e.g. its own files). The initial
        parameters are process 0's. Only process 0 saves the `checkpoint`, and on
        resuming gives its checkpoint to every process (the others need no copy).
        """
        source = as_source(source)
        limit_programs()
        if self._engine.mesh is not None and _processes.several():
            _processes.check_local(self._engine.mesh.devices.flat)
        dtype = jnp.result_type(float)
        state = self._state(self._engine.first_chunk(source, dtype))
        # Every process starts from the same point (a model's guess of `p0` could read
        # a different first chunk in each).
        state = eqx.tree_at(lambda s: s.params, state, _processes.agree(state.params))
        strategy, max_nfev = state.strategy, state.max_nfev
        x0, _ = start_point(state)  # strictly inside the bounds, as `solve` starts
        try:
            n_points = len(source)
        except TypeError:
            n_points = None
        chunk_size = self._engine.chunk_size(self.chunk_size, x0.size, dtype, n_points)
        bar = self._progress_bar()
        items = self._fingerprint(state)
        prints = fingerprint(items)
        try:
            resumed = (
                None
                if checkpoint is None
                else self._resume(checkpoint, state, prints, tuple(items))
            )
            check_pointwise = True  # on the first pass of every run, resumed or not
            if resumed is None:
                lin0, sums = self._engine.pass_over(
                    source, state, x0, chunk_size, bar, split, check_pointwise
                )
                check_pointwise = False
                problem = self._engine.problem(state, sums.n_points)
                carry = start_loop(strategy, x0, lin0, problem, max_nfev)
                saved = FitCheckpoint(
                    carry, x0, sums, lin0.cost, sums, jnp.ones(()), jnp.asarray(True)
                )
            else:
                saved = resumed
                problem = self._engine.problem(state, saved.n_points)
                if int(saved.carry.status) != RUNNING:
                    # Nothing left to compute, but the data must be the checkpoint's.
                    _, sums = self._engine.pass_over(
                        source, state, saved.carry.x, chunk_size, bar, split, check_pointwise
                    )
                    check_same_data(saved.first, sums, int(saved.passes) + 1, checkpoint)
            self._describe(bar, saved)
            if checkpoint is not None and _processes.is_main():
                save_checkpoint(checkpoint, saved, prints)

            def evaluate(x):
                """One pass at `x`, which must read the first pass's data."""
                nonlocal check_pointwise
                trial, sums = self._engine.pass_over(
                    source, state, x, chunk_size, bar, split, check_pointwise
                )
                check_same_data(
                    saved.first,
                    sums,
                    int(saved.passes) + 1,
                    None if resumed is None else checkpoint,
                )
                check_pointwise = False
                return trial, sums

            iterations = host_iterations(strategy, saved.carry, problem, max_nfev, evaluate)
            for carry, accepted, sums in iterations:
                saved = FitCheckpoint(
                    carry,
                    saved.x0,
                    saved.first,
                    saved.initial_cost,
                    tree_where(accepted, sums, saved.sums),
                    saved.passes + 1,
                    accepted,
                )
                self._describe(bar, saved)
                if checkpoint is not None and _processes.is_main():
                    save_checkpoint(checkpoint, saved, prints)
        finally:
            if bar is not None:
                bar.close()
        self.passes = int(saved.passes)
        return self._engine.result(state, problem, saved.carry, saved.sums, saved.initial_cost)

    def _resume(self, path, state, prints, names) -> FitCheckpoint | None:
        """The checkpoint to resume from; with several processes, process 0's (the one
        that saves them), given to every process."""
        problem = self._engine.problem(state, 1)
        if not _processes.several():
            return load_checkpoint(path, state, problem, prints, names)
        mine = (
            load_checkpoint(path, state, problem, prints, names) if _processes.is_main() else None
        )
        if not bool(_processes.agree(jnp.asarray(int(mine is not None)))):
            return None
        return _processes.agree(mine if mine is not None else checkpoint_like(state, problem))

    # ----------------------------------------------------------------- progress

    def _progress_bar(self):
        """A tqdm bar counting chunks, its label the pass, cost and iterations."""
        if self.verbose == 0 or not _processes.is_main():
            return None
        try:
            tqdm = optional_import("tqdm.auto", "progress")
        except ImportError:
            if self.verbose is None:  # the default: a bar only where tqdm is installed
                return None
            raise
        return tqdm.tqdm(
            desc="pass 1",
            unit="chunk",
            bar_format="{desc}: {n_fmt} chunks [{elapsed}, {rate_fmt}{postfix}]",
            # By default, only fits that last (more than two seconds) show a bar.
            delay=2.0 if self.verbose is None else 0.0,
            leave=self.verbose is not None,
        )

    @staticmethod
    def _describe(bar, saved):
        if bar is not None:
            bar.set_description(f"pass {int(saved.passes)}")
            bar.set_postfix(
                cost=f"{float(saved.carry.linearization.cost):.6g}", nit=int(saved.carry.nit)
            )

    # ----------------------------------------------------------------- results

    # ----------------------------------------------------------------- single pass

    def _reset_stream(self):
        self._stream = None

    @reraise_host_errors
    def update(self, x_chunk, y_chunk, sigma=None) -> StreamUpdate:
        """Take in one chunk of a stream that is seen only once.

        The cost of the chunks already seen is kept as a quadratic (Gauss–Newton) model:
        each chunk's cost, linearised at the parameters fitted right after it, summed
        into one ``n``-sized summary. The new chunk's exact cost plus that quadratic is
        minimised by the same trust-region strategy as `fit` (with the bounds and loss),
        starting from the current parameters, and the chunk is then folded into the
        quadratic at the new parameters. This is recursive (information-form) Gauss–Newton,
        the iterated extended Kalman filter without process noise: for a model linear in
        its parameters with the linear loss it is exact (after every chunk, the
        parameters are the least-squares fit of all data so far); otherwise each chunk's
        contribution is frozen at the parameters of its time, so early chunks are
        linearised further from the final answer than `fit` would. Memory is ``O(n²)``
        plus one chunk.

        `converged` is True when the fit on the chunk succeeded and the chunk moved the
        parameters by less than SciPy's `xtol` test, ``‖Δp‖ < xtol (xtol + ‖p‖)``. On
        noisy data every new chunk moves the estimate by about its standard error times
        ``sqrt(chunk / points so far)``: raise `xtol` to stop a stream early.
        """
        try:
            self._stream, update = update_stream(
                self._engine,
                self._stream,
                x_chunk,
                y_chunk,
                sigma,
                p0=self.p0,
                chunk_size=self.chunk_size,
                factorization=self.factorization,
            )
        finally:  # known once the first chunk's configuration is validated
            if self._engine.names is not None:
                self.names = self._engine.names
        return update

    def result(self) -> CurveFitResult:
        """The single-pass estimate after the chunks given to `update` (see there for
        what it approximates): parameters, covariance from the accumulated Jacobian
        factor, statistics from the residuals of each chunk at its own fit."""
        return stream_result(self._engine, self._stream)

    def reset(self) -> None:
        """Forget the chunks given to `update` (start a new stream)."""
        self._reset_stream()
