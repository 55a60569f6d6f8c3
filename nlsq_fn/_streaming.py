"""``StreamingOptimizer``: exact fits of data read from a source, pass by pass.

The strategies only see the ``n``-sized summary of the linearised problem (cost,
gradient, Jacobian factor). Here that summary is computed by a host loop over the
chunks of a source: each evaluation is one pass, chunks are padded to one shape (so one
compiled program serves them all) and read by a background thread while the previous
chunk is computed. The trust-region iterations are the strategy's own `propose` and
`judge` (the same code `solve` runs inside its compiled loop), driven from Python, and
the state between iterations is a pytree that is checkpointed to disk after each one.
"""

import os
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from . import _processes, _sharding
from ._bounds import find_active_constraints
from ._chunks import Sums, _finish, _fold, _fold_chunk, _padded, _zeros, prefetch
from ._covariance import covariance_parts
from ._curve_fit_class import CurveFit, bucket_size
from ._data import Data
from ._fit_result import CurveFitResult
from ._linearize import Linearization
from ._memory import automatic_chunk_size
from ._misc import tree_where
from ._solve import _Carry, advance, start, start_point
from ._solver import SolverState, init
from ._sources import AbstractSource, as_source, fixed_chunks, optional_import
from ._strategy import Problem
from ._trust_region import RUNNING


@eqx.filter_jit
def _propose(strategy, carry: _Carry, problem: Problem):
    return strategy.propose(carry.x, carry.linearization, carry.strategy_state, problem)


@eqx.filter_jit
def _judge(strategy, carry: _Carry, proposal, trial: Linearization, problem, max_nfev):
    out = strategy.judge(
        carry.x, carry.linearization, carry.strategy_state, proposal, trial, problem
    )
    return advance(carry, out, strategy, max_nfev), out.accepted


_start = eqx.filter_jit(start)


class _Checkpoint(eqx.Module):
    """What a resumed fit needs: the loop's carry and the facts of the first pass."""

    carry: _Carry
    x0: Float[Array, " n"]
    n_points: Float[Array, ""]
    initial_cost: Float[Array, ""]
    sums: Sums  # at the current iterate
    passes: Float[Array, ""]


def _save(path, checkpoint):
    # Write then rename: a process killed while writing leaves the last checkpoint intact.
    # (A name of this process's own: processes of one fit may share a file system.)
    temporary = f"{path}.{os.getpid()}.tmp"
    eqx.tree_serialise_leaves(temporary, checkpoint)
    os.replace(temporary, path)


class StreamUpdate(eqx.Module):
    """What `StreamingOptimizer.update` returns after each chunk."""

    x: Float[Array, " n"]  # the parameters after this chunk
    cost: Float[Array, ""]  # approximate cost of all points so far (see `update`)
    grad: Float[Array, " n"]  # its gradient at `x`
    step_norm: Float[Array, ""]  # how far this chunk moved the parameters
    n_points: int = eqx.field(static=True)
    n_chunks: int = eqx.field(static=True)
    status: int = eqx.field(static=True)  # of the fit on this chunk
    converged: bool = eqx.field(static=True)


class _Prior(eqx.Module):
    """The quadratic model ``c + gᵀ(p - centre) + ½‖r (p - centre)‖²`` of the cost of
    the chunks already seen, each linearised at the parameters fitted right after it."""

    centre: Float[Array, " n"]
    cost: Float[Array, ""]
    grad: Float[Array, " n"]
    factor: Float[Array, "n n"]

    def at(self, p):
        d = p - self.centre
        rd = self.factor @ d
        return self.cost + self.grad @ d + 0.5 * rd @ rd, self.grad + self.factor.T @ rd


@eqx.filter_jit
def _with_prior(lin: Linearization, prior: _Prior, p) -> Linearization:
    cost, grad = prior.at(p)
    factor = jnp.linalg.qr(jnp.concatenate([lin.factor, prior.factor]), mode="r")
    return Linearization(lin.cost + cost, lin.grad + grad, factor)


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
    new size compiles once. None chooses it from the available memory
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
        self._fitter = CurveFit(
            model, p0=p0, bounds=bounds, method=method, loss=loss, f_scale=f_scale,
            x_scale=x_scale, jac=jac, ftol=ftol, xtol=xtol, gtol=gtol, max_nfev=max_nfev,
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
        self.method = self._fitter.method
        self._mesh = None if devices is None else _sharding.points_mesh(devices)
        self._reset_stream()

    # ----------------------------------------------------------------- set-up

    def _chunk_size(self, n_params, dtype, n_points=None) -> int:
        if self.chunk_size is None:
            size = automatic_chunk_size(n_params, dtype)
            if n_points is not None:  # no chunk larger than the data needs
                size = min(size, bucket_size(n_points))
        else:
            size = self.chunk_size
        size = int(size)
        if size < 1:
            raise ValueError(f"`chunk_size` must be a positive integer, got {self.chunk_size}.")
        if self._mesh is not None:  # an equal share of every chunk for each device
            n_devices = self._mesh.devices.size
            size = -(-size // n_devices) * n_devices
        return size

    def _state(self, first: Data, p0) -> SolverState:
        """Validated configuration, from the first chunk (checks the model's output)."""
        fitter = self._fitter
        # CurveFit's rule for the model's convention (SciPy's f(x, *p), the guide's
        # model(x, params), named models), so both optimizers read a model alike.
        style, model, names = fitter._convention(p0)
        p0 = fitter._initial_params(p0, np.asarray(first.x), np.asarray(first.y), style, names)
        names = names or tuple(f"p{i}" for i in range(p0.size))
        bounds = fitter._flat_bounds(fitter.bounds, names)
        solver = fitter._solver(
            bounds, style,
            factorization=self.factorization,
            chunk_size=None,  # the chunks are this optimizer's own
        )
        if not fitter.strategy.steps_from_host:
            raise ValueError(
                f"{type(fitter.strategy).__name__} cannot be driven from a host loop."
            )
        try:
            state = init(model, first, p0, solver)
        except ValueError as error:
            raise ValueError(
                str(error).replace("`y`", "the chunk's `y`").replace("`x`", "the chunk's `x`")
            ) from error
        self.names = names
        self._model = model
        return state

    def _problem(self, state: SolverState, n_points) -> Problem:
        return Problem(
            lower=state.lower, upper=state.upper, x_scale=state.x_scale,
            ftol=state.ftol, xtol=state.xtol, gtol=state.gtol,
            n_rows=jnp.asarray(n_points, jnp.result_type(int)), bounded=state.bounded,
        )

    # ----------------------------------------------------------------- exact fit

    def _chunks(self, chunks, chunk_size, dtype, read_ahead=True):
        """`chunks` (of at most `chunk_size` points) padded to one shape as `Data`, on
        their devices, read ahead in a thread."""
        chunks = _padded(chunks, chunk_size, dtype)
        if self._mesh is not None:
            chunks = (_sharding.place_chunk(chunk, self._mesh) for chunk in chunks)
        return prefetch(chunks) if read_ahead else chunks

    def _summarize(self, chunks, state, x, bar=None, *, across_processes=False
                   ) -> tuple[Linearization, Sums]:
        """The summary at `x` of all `chunks` (and, `across_processes`, of the other
        processes' chunks), and the sums of their residuals."""
        running = _zeros(x.size, state.lower.dtype)
        if self._mesh is not None:
            running = _sharding.sharded_zeros(running, self._mesh)
        for chunk in chunks:
            if self._mesh is None:
                running = _fold(running, self._model, state, x, chunk)
            else:
                running = _sharding.sharded_fold(
                    _fold_chunk, running, self._model, state, x, chunk, self._mesh
                )
            if bar is not None:
                bar.update(1)
        if self._mesh is not None:
            running = _sharding.reduce_devices(running, state.factorization)
        if across_processes:
            running = _processes.combine(running, state.factorization)
        return _finish(running, state.factorization), running.sums

    def _pass(self, source: AbstractSource, state, x, chunk_size, bar, split) -> tuple:
        """One pass: the summary at `x` and the sums of its residuals (of all
        processes' shares)."""
        chunks = self._chunks(_processes.share(source, chunk_size, split), chunk_size,
                              state.lower.dtype, source.read_ahead)
        lin, sums = self._summarize(chunks, state, x, bar, across_processes=True)
        if float(sums.n_points) == 0:
            raise ValueError("The source gave no data points.")
        return lin, sums

    def _first_chunk(self, source, dtype) -> Data:
        for x, y, sigma in fixed_chunks(source.pieces(), 1 << 12):
            return Data(np.asarray(x, dtype), np.asarray(y, dtype),
                        sigma=None if sigma is None else np.asarray(sigma, dtype))
        raise ValueError("The source gave no data points.")

    def fit(
        self, source, checkpoint: str | os.PathLike | None = None, *, split: bool = True
    ) -> CurveFitResult:
        """The exact fit of all the data in `source` (each evaluation one pass over it).

        With `checkpoint` (a file path), the fit's state is saved there after each
        iteration; if the file exists, the fit resumes from it (it must be a checkpoint
        of the same fit: same `p0`, options and data). Returns a `CurveFitResult` like
        `CurveFit.fit` (no per-point residuals: statistics come from sums over the
        last pass).

        Under `jax.distributed` every process calls `fit`, and the result is the fit of
        all processes' points. `split`: True (default) when every process passes the
        same `source`: each takes its share, one contiguous block of rows for arrays
        and `.npy` files (read only by that process), every ``process_count``-th chunk
        for other sources (read by every process, folded by one). False when each
        process passes its own part of the data (e.g. its own files). The initial
        parameters are process 0's. With a `checkpoint` on a shared file system, give
        each process a path of its own.
        """
        source = as_source(source)
        dtype = jnp.result_type(float)
        state = self._state(self._first_chunk(source, dtype), self.p0)
        # Every process starts from the same point (a model's guess of `p0` could read
        # a different first chunk in each).
        state = eqx.tree_at(lambda s: s.params, state, _processes.agree(state.params))
        strategy, max_nfev = state.strategy, state.max_nfev
        x0, _ = start_point(state)  # strictly inside the bounds, as `solve` starts
        try:
            n_points = len(source)
        except TypeError:
            n_points = None
        chunk_size = self._chunk_size(x0.size, dtype, n_points)
        bar = self._progress_bar()
        try:
            resumed = self._load(checkpoint, state) if checkpoint is not None else None
            if resumed is None:
                lin0, sums = self._pass(source, state, x0, chunk_size, bar, split)
                problem = self._problem(state, sums.n_points)
                carry = _start(strategy, x0, lin0, problem, max_nfev)
                saved = _Checkpoint(carry, x0, sums.n_points, lin0.cost, sums, jnp.ones(()))
            else:
                saved = resumed
                problem = self._problem(state, saved.n_points)
            self._describe(bar, saved)
            if checkpoint is not None:
                _save(checkpoint, saved)
            while int(saved.carry.status) == RUNNING:
                carry = saved.carry
                x_trial, proposal = _propose(strategy, carry, problem)
                trial, sums = self._pass(source, state, x_trial, chunk_size, bar, split)
                carry, accepted = _judge(strategy, carry, proposal, trial, problem, max_nfev)
                saved = _Checkpoint(
                    carry, saved.x0, saved.n_points, saved.initial_cost,
                    tree_where(accepted, sums, saved.sums),
                    saved.passes + 1,
                )
                self._describe(bar, saved)
                if checkpoint is not None:
                    _save(checkpoint, saved)
        finally:
            if bar is not None:
                bar.close()
        self.passes = int(saved.passes)
        return self._result(state, problem, saved.carry, saved.sums, saved.initial_cost)

    def _load(self, path, state) -> _Checkpoint | None:
        if not os.path.exists(path):
            return None
        n = state.params.size
        dtype = state.lower.dtype
        shape_only = jax.eval_shape(
            lambda: _Checkpoint(
                _start(
                    state.strategy, state.params,
                    Linearization(jnp.zeros((), dtype), jnp.zeros(n, dtype),
                                  jnp.zeros((n, n), dtype)),
                    self._problem(state, 1), state.max_nfev,
                ),
                state.params, jnp.zeros((), dtype), jnp.zeros((), dtype),
                Sums.zeros(dtype), jnp.zeros((), dtype),
            )
        )
        like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shape_only)
        try:
            saved = eqx.tree_deserialise_leaves(path, like)
        except Exception as error:
            raise ValueError(
                f"The checkpoint {os.fspath(path)!r} is not one of this fit (another "
                f"model, method or number of parameters?): {error}"
            ) from error
        if not np.array_equal(np.asarray(saved.x0), np.asarray(state.params)):
            raise ValueError(
                f"The checkpoint {os.fspath(path)!r} belongs to a fit from another `p0`; "
                "delete it to start afresh."
            )
        return saved

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
            bar.set_postfix(cost=f"{float(saved.carry.linearization.cost):.6g}",
                            nit=int(saved.carry.nit))

    # ----------------------------------------------------------------- results

    def _result(self, state, problem, carry, sums, initial_cost, **extra) -> CurveFitResult:
        x, lin = carry.x, carry.linearization
        parts = covariance_parts(lin.factor, lin.cost, sums.n_points)
        pcov = np.asarray(parts.covariance(self._fitter.absolute_sigma))
        if state.strategy.supports_bounds:
            active = find_active_constraints(x, state.lower, state.upper, state.xtol)
        else:
            active = jnp.zeros(x.shape, jnp.int32)
        return StreamedFitResult(
            sums=jax.tree.map(float, sums),
            model=self._model,
            names=self.names,
            xdata=None,
            ydata=None,
            sigma=None,
            absolute_sigma=self._fitter.absolute_sigma,
            pcov=pcov,
            x=np.asarray(x),
            cost=lin.cost,
            fun=np.zeros(0),
            jac=np.asarray(lin.factor),
            grad=np.asarray(lin.grad),
            optimality=state.strategy.optimality(x, lin, problem),
            active_mask=np.asarray(active),
            nfev=carry.nfev,
            njev=carry.njev,
            nit=carry.nit,
            status=carry.status,
            success=carry.status > 0,
            initial_cost=initial_cost,
            lower=np.asarray(state.lower),
            upper=np.asarray(state.upper),
            rank=int(parts.rank),
            singular_values=np.asarray(parts.singular_values),
            method=self.method,
            loss=type(self._fitter.loss).__name__,
            p0=np.asarray(state.params),
            **extra,
        )

    # ----------------------------------------------------------------- single pass

    def _reset_stream(self):
        self._stream = None

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
        dtype = jnp.result_type(float)
        x_chunk, y_chunk = np.asarray(x_chunk, dtype), np.asarray(y_chunk, dtype)
        sigma = None if sigma is None else np.asarray(sigma, dtype)
        if self._stream is None:
            first = Data(x_chunk, y_chunk, sigma=sigma)
            state = self._state(first, self.p0)
            n = state.params.size
            zero = jnp.zeros((), dtype)
            self._stream = dict(
                state=state,
                prior=_Prior(
                    start_point(state)[0], zero, jnp.zeros(n, dtype), jnp.zeros((n, n), dtype)
                ),
                sums=Sums.zeros(dtype), n_chunks=0, nfev=0, njev=0, nit=0, status=RUNNING,
                initial_cost=None, last=None,
            )
        stream = self._stream
        state, prior = stream["state"], stream["prior"]
        chunk_size = self._chunk_size(state.params.size, dtype)
        chunks = list(self._chunks(
            fixed_chunks(iter([(x_chunk, y_chunk, sigma)]), chunk_size), chunk_size, dtype,
            read_ahead=False,
        ))

        def evaluate(p):
            lin, sums = self._summarize(chunks, state, p)
            return _with_prior(lin, prior, p), sums

        n_points = float(stream["sums"].n_points) + y_chunk.shape[0]
        problem = self._problem(state, n_points)
        p_before = prior.centre
        lin, sums = evaluate(p_before)
        if stream["initial_cost"] is None:
            stream["initial_cost"] = lin.cost
        carry = _start(state.strategy, p_before, lin, problem, state.max_nfev)
        while int(carry.status) == RUNNING:
            x_trial, proposal = _propose(state.strategy, carry, problem)
            trial, trial_sums = evaluate(x_trial)
            carry, accepted = _judge(
                state.strategy, carry, proposal, trial, problem, state.max_nfev
            )
            sums = tree_where(accepted, trial_sums, sums)
        p, lin = carry.x, carry.linearization
        # The chunk joins the quadratic linearised at the new parameters: the summary
        # there (chunk plus quadratic so far) is the new quadratic.
        stream["prior"] = _Prior(p, lin.cost, lin.grad, lin.factor)
        stream["sums"] = stream["sums"] + sums
        stream["n_chunks"] += 1
        for name in ("nfev", "njev", "nit"):
            stream[name] += int(getattr(carry, name))
        status = int(carry.status)
        stream["status"] = status
        step_norm = jnp.linalg.norm(p - p_before)
        converged = (
            status > 0 and stream["n_chunks"] > 1
            and float(step_norm) < state.xtol * (state.xtol + float(jnp.linalg.norm(p)))
        )
        stream["last"] = (carry, problem)
        return StreamUpdate(
            x=p, cost=carry.linearization.cost, grad=carry.linearization.grad,
            step_norm=step_norm, n_points=int(n_points), n_chunks=stream["n_chunks"],
            status=status, converged=bool(converged),
        )

    def result(self) -> CurveFitResult:
        """The single-pass estimate after the chunks given to `update` (see there for
        what it approximates): parameters, covariance from the accumulated Jacobian
        factor, statistics from the residuals of each chunk at its own fit."""
        if self._stream is None or self._stream["last"] is None:
            raise ValueError("No data yet: call `update(x_chunk, y_chunk)` first.")
        stream = self._stream
        carry, problem = stream["last"]
        prior = stream["prior"]
        cost, grad = prior.at(prior.centre)
        carry = eqx.tree_at(
            lambda c: (c.linearization, c.nfev, c.njev, c.nit),
            carry,
            (Linearization(cost, grad, prior.factor), jnp.asarray(stream["nfev"]),
             jnp.asarray(stream["njev"]), jnp.asarray(stream["nit"])),
        )
        return self._result(stream["state"], problem, carry, stream["sums"],
                            stream["initial_cost"])

    def reset(self) -> None:
        """Forget the chunks given to `update` (start a new stream)."""
        self._reset_stream()


class StreamedFitResult(CurveFitResult):
    """A `CurveFitResult` without per-point arrays: `fun` is empty and `jac` is the
    ``n × n`` Jacobian factor (``jacᵀ jac = JᵀJ``); the statistics (`chisqr`,
    `redchi`, `rmse`, `r_squared`, `aic`, `bic`) come from sums over the data."""

    def __init__(self, *, sums: dict, **fields):
        self.sums = sums
        super().__init__(**fields)

    @property
    def n_points(self) -> int:
        return int(self.sums.n_points)

    @property
    def _goodness(self) -> dict:
        s = self.sums
        n = s.n_points
        # The formulas of `nlsq_fn._stats.goodness_of_fit`, from sums:
        # Σ (y - ȳ)² = Σ y² - (Σ y)² / n.
        dof = n - self.n_params
        ss_tot = s.sum_y2 - s.sum_y**2 / n
        tiny = np.finfo(float).tiny
        log_term = n * np.log(max(s.chisqr, tiny) / n)
        return dict(
            chisqr=s.chisqr,
            redchi=s.chisqr / dof if dof > 0 else float("inf"),
            rmse=float(np.sqrt(s.ss_res / n)),
            r_squared=1 - s.ss_res / ss_tot if ss_tot > 0 else float("nan"),
            aic=float(log_term + 2 * self.n_params),
            bic=float(log_term + np.log(n) * self.n_params),
        )

    @property
    def best_fit(self):
        raise AttributeError("A streamed fit keeps no per-point values; use eval(x).")

    residual = best_fit

    def eval(self, x=None, params=None):
        if x is None:
            raise ValueError("A streamed fit keeps no data: give `x`.")
        return super().eval(x, params)
