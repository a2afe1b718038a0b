"""Quantization internals: calibration collectors, qparams, QDQ placement."""
