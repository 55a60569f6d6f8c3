"""SciPy's and NLSQ's interfaces over the drivers: `curve_fit`, `CurveFit`,
`least_squares`, `LeastSquares`, batches of curve fits, structured parameters, global
fits, ODR."""
