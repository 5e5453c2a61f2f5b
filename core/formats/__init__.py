"""Stored encodings of weights (dense, sparse, int8, k-bit, codebooks): data, never code, decoded within bounds.
Imports core.base, core.data and core.models."""
