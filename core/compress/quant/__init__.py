"""Quantization: modes and coverage, the in-page preview, quantized files that reload as data.
Part of core.compress: imports what core.compress may."""
