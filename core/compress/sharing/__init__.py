"""Trained weight sharing (Deep Compression): k-means codebooks with fine-tuned centroids.
Part of core.compress: imports what core.compress may."""
