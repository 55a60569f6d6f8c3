"""Data too large for memory, on top of `CurveFit`: sources read chunk by chunk,
`StreamingOptimizer`'s passes and single-pass updates, processes, NLSQ's large-data
names."""
