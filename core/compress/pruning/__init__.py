"""Pruning: masks (torch.nn.utils.prune), structural removal (Torch-Pruning), schedules, the live preview.
Part of core.compress: imports core.base, data, models, formats and measure (never the training loop)."""
