"""Every built-in lesson experiment, registered by importing its module (one module per group of
lessons), and `run_experiment`, the one way pages, scripts and benchmarks run one by name."""
from core.lessons import exp_knowledge, exp_pipeline, exp_pruning, exp_quant, exp_recovery  # noqa: F401  (registers)
from core.lessons.registry import EXPERIMENTS, ExperimentResult


def run_experiment(name: str, ws, params: dict) -> ExperimentResult:
    """Run the registered experiment `name` with the control values `params`."""
    if name not in EXPERIMENTS:
        raise ValueError(f"no experiment named {name!r}; known: {', '.join(sorted(EXPERIMENTS))}")
    return EXPERIMENTS[name](ws, dict(params))
