"""Compression Workbench engine: pure PyTorch, never imports Streamlit.

Packages by purpose, each importing only those to its left (docs/ARCHITECTURE.md):
base <- data, models <- formats <- measure <- compress <- store <- tasks <- run | io <- cli, lessons;
viz imports base and measure only. This file imports nothing, so `import core` is cheap.
"""
