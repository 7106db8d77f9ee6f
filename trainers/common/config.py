"""Frozen, validated configuration shared by every trainer, built from flags at the edge."""

import dataclasses

from absl import flags

from cluster.errors import ConfigError, check_choice
from cluster.tf_config import TASK_NAME_RE
from trainers.common import flags as common_flags
from trainers.common.outputs import default_run_dir
from trainers.common.partition import PARTITIONS

_FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """What every approach needs; invalid values raise ConfigError naming the flag."""
  approach: str
  dataset: str = "mnist"
  data_dir: str | None = None
  synthetic_examples: int = 6000
  model: str = "mlp"
  batch_size: int = 64
  epochs: int = 1
  steps_per_epoch: int | None = None
  learning_rate: float = 2e-3
  lr_schedule: str = "cosine"
  optimizer: str = "adam"
  seed: int = 42
  partition: str = "iid"
  dirichlet_alpha: float = 0.5
  run_dir: str = ""
  log_every: int = 100
  eval_every_examples: int | None = None
  target_accuracy: float | None = None
  stop_at_target: bool = False
  fail_task: str | None = None
  fail_at_step: int | None = None
  resume: bool = False

  def __post_init__(self):
    check_choice("model", self.model, common_flags.MODELS)
    check_choice("optimizer", self.optimizer, common_flags.OPTIMIZERS)
    check_choice("lr_schedule", self.lr_schedule, common_flags.LR_SCHEDULES)
    check_choice("partition", self.partition, PARTITIONS)
    if not 0 < self.dirichlet_alpha < float("inf"):
      raise ConfigError(f"--dirichlet_alpha must be > 0, got {self.dirichlet_alpha}")
    for name in ("batch_size", "epochs", "log_every", "synthetic_examples"):
      check_positive(name, getattr(self, name))
    for name in ("steps_per_epoch", "eval_every_examples"):
      if getattr(self, name) is not None:
        check_positive(name, getattr(self, name))
    if not 0 < self.learning_rate <= _FLOAT32_MAX:
      raise ConfigError(f"--learning_rate must be > 0 and a float32 (<= 3.4e38), got "
                        f"{self.learning_rate}")
    if self.target_accuracy is not None and not 0 < self.target_accuracy <= 1:
      raise ConfigError(f"--target_accuracy must be in (0, 1], got {self.target_accuracy}")
    if self.stop_at_target and self.target_accuracy is None:
      raise ConfigError("--stop_at_target needs --target_accuracy")
    if self.fail_task is not None and not TASK_NAME_RE.match(self.fail_task):
      raise ConfigError(f"--fail_task must look like 'worker:1', got {self.fail_task!r}")
    if (self.fail_task is None) != (self.fail_at_step is None):
      raise ConfigError("--fail_task and --fail_at_step go together")
    if not self.run_dir:
      object.__setattr__(self, "run_dir", default_run_dir(self.approach))

  @classmethod
  def from_flags(cls, fv: flags.FlagValues, approach: str) -> "TrainConfig":
    names = [f.name for f in dataclasses.fields(cls) if f.name != "approach"]
    return cls(approach=approach, **{n: fv[n].value for n in names if n in fv})


def check_positive(name: str, value: int) -> None:
  if value < 1:
    raise ConfigError(f"--{name} must be >= 1, got {value}")


def check_profile(profile_ms: int, profile_at_step: int) -> None:
  if profile_ms < 0 or profile_at_step < 1:
    raise ConfigError(f"--profile_ms must be >= 0 and --profile_at_step >= 1, got "
                      f"{profile_ms} and {profile_at_step}")


class ApproachConfig:
  """What every approach's config adds to its own fields (a frozen dataclass with
  `train`, the shared TrainConfig, and the approach's flags): built from the flags
  of the same names, and checked against the cluster before anything starts."""

  @classmethod
  def from_flags(cls, fv: flags.FlagValues, approach: str):
    """The config from the flags of the same names (`train` from the shared ones)."""
    names = [f.name for f in dataclasses.fields(cls) if f.name != "train"]
    return cls(train=TrainConfig.from_flags(fv, approach), **{n: fv[n].value for n in names})

  def check_cluster(self, num_workers: int) -> None:
    """Raises ConfigError when this config cannot run with `num_workers` workers;
    the launcher asks before it starts anything, the trainer again on start."""
    del num_workers  # most approaches run with any count their record allows


def flag_dict(fv: flags.FlagValues) -> dict:
  """Every flag value, for config.json."""
  return {name: fv[name].value for name in sorted(fv)}
