"""Datasets: their types, built-in loaders, uploaded zips, single images and their preprocessing.
Imports core.base only."""
