"""What a fit returns: `Solution`, `CurveFitResult` (covariance, statistics, reports,
plots) and SciPy's `OptimizeResult`."""
