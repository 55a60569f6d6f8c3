"""The model evaluated at a point and reduced to an n-sized `Linearization`: one shot,
chunked or matrix-free; Jacobians (finite differences, sparse); memory, devices and
compiled programs."""
