"""Quantization: modes and coverage, the in-page preview, quantized files that reload as data.
Part of core.compress: imports core.base, data, models, formats and measure."""
