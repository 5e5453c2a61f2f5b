"""Knowledge distillation (Hinton et al.) on the one training loop.
Part of core.compress: imports what core.compress may."""
