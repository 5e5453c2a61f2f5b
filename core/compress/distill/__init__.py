"""Knowledge distillation (Hinton et al.) on the one training loop.
Part of core.compress: imports core.base, data, models, formats and measure."""
