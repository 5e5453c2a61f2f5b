"""Pruning: masks (torch.nn.utils.prune), structural removal (Torch-Pruning), schedules, the live preview.
Part of core.compress: imports what core.compress may."""
