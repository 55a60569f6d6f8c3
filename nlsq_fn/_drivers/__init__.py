"""`init` (the validated `SolverState`) and what runs a strategy: `solve` (one compiled,
differentiable program), the step-by-step fit of a new model, host loops and their
checkpoints, the fold of a pass of chunks, batches, multistart, block-arrow global
fits."""
