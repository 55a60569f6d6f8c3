"""The trust-region strategies (TRF, dogbox, Levenberg-Marquardt, their LSMR forms):
`propose` a trial point from the n-sized summary and `judge` it. They never see the
model."""
