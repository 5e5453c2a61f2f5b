"""Trained weight sharing (Deep Compression): k-means codebooks with fine-tuned centroids.
Part of core.compress: imports core.base, data, models, formats and measure."""
