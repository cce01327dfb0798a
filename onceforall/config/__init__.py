"""Training configuration: YAML files mapped onto typed dataclasses.

Unknown keys are errors (a typo must not silently train something else), ``key=value`` overrides
address nested fields with dots (``data.root=/data``, ``schedule.phases.1.epochs=2``), and the
resolved config is written into the run directory so a run can be reproduced and resumed.
"""

from onceforall.config.loading import (
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from onceforall.config.schema import (
    DISTILL_TEACHERS,
    SANDWICH_RESOLUTIONS,
    DistillConfig,
    ModelConfig,
    OptimizerConfig,
    PhaseConfig,
    ScheduleConfig,
    TrainConfig,
)

__all__ = [
    "DISTILL_TEACHERS",
    "SANDWICH_RESOLUTIONS",
    "DistillConfig",
    "ModelConfig",
    "OptimizerConfig",
    "PhaseConfig",
    "ScheduleConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]
