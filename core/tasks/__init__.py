"""The task layer: workflow steps that read variants, run an algorithm and store a measured child.
Imports core.store and what lies below it, never core.run or core.io (a runner's fan-out reaches a
task through TaskContext.fanout).

Each step kind is one config dataclass and one handler registered with it (`registry.py`); the
CLI, the pages and the job runners look them up here. Importing this package registers the built-in
tasks and the plugins named in $WORKBENCH_TASK_MODULES; modules inside it import `core.tasks.registry`,
never this package itself.
"""
from core.tasks import (  # noqa: F401  (importing registers the built-in tasks)
    distill,
    finetune,
    measure,
    prune,
    prune_recover,
    quantize,
    replay,
    sensitivity,
    share_weights,
    sweep,
    train,
    transfer,
)
from core.tasks.distill import DistillJobConfig, compare_distillation
from core.tasks.measure import MeasureJobConfig
from core.tasks.prune import PruneJobConfig
from core.tasks.prune_recover import PruneRecoverJobConfig
from core.tasks.quantize import QuantizeJobConfig
from core.tasks.registry import (
    TaskContext,
    TaskOutcome,
    TaskSpec,
    config_fields,
    get_task,
    job_title,
    list_tasks,
    load_plugins,
    parse_config,
    register_task,
    run_task,
    validate_config,
)
from core.tasks.sensitivity import SensitivityJobConfig, sensitivity_from_events, sensitivity_result
from core.tasks.train import TrainJobConfig
from core.tasks.transfer import TransferJobConfig

load_plugins()

__all__ = ["TaskContext", "TaskOutcome", "TaskSpec", "config_fields", "get_task", "job_title", "list_tasks",
           "load_plugins", "parse_config", "register_task", "run_task", "validate_config",
           "DistillJobConfig", "compare_distillation",
           "MeasureJobConfig", "PruneJobConfig", "PruneRecoverJobConfig", "QuantizeJobConfig", "SensitivityJobConfig",
           "TrainJobConfig", "TransferJobConfig",
           "sensitivity_from_events", "sensitivity_result"]
