"""What the user gives: the data, how a model takes its parameters (and NumPy models run
on the host), the losses, SciPy's argument conventions."""
