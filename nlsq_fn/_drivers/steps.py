"""A strategy's steps as compiled programs that do not depend on the model.

`propose`, `judge` and the loop's start see only the ``n``-sized summary of an
evaluation (`Linearization`), never the model: compiled once per strategy, options,
number of parameters and dtype, they serve every model. Host loops drive them: streamed
fits (`nlsq_fn._drivers.host_loop`) and the step-by-step fit of a new model
(`nlsq_fn._drivers.stepwise`).
"""

from .._evaluation.linearize import Linearization
from .._evaluation.program_store import stored
from .._strategies.strategy import Problem
from .solve import LoopCarry, advance, start


@stored
def propose_step(strategy, carry: LoopCarry, problem: Problem):
    """The strategy's trial point from the loop's state."""
    return strategy.propose(carry.x, carry.linearization, carry.strategy_state, problem)


@stored
def judge_step(strategy, carry: LoopCarry, proposal, trial: Linearization, problem, max_nfev):
    """The loop's next state once the trial's summary is known, and whether the trial
    was accepted."""
    out = strategy.judge(
        carry.x, carry.linearization, carry.strategy_state, proposal, trial, problem
    )
    return advance(carry, out, strategy, max_nfev), out.accepted


start_loop = stored(start)
