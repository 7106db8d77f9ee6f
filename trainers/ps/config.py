"""The parameter server's flags and validated config, importable without TensorFlow."""

import dataclasses

from absl import flags

from cluster import approaches
from cluster.errors import ConfigError, check_choice
from trainers.common import config as config_lib
from trainers.common import flags as common_flags

APPROACH = approaches.PS.name
PS_MODES = ("async", "sync")
SYNC_AGGREGATIONS = ("mean", "sum")
# Async: measured best (BENCHMARKS.md "The parameter server's per-step tax"). Sync keeps
# one step a closure unless asked: its barrier measured no faster on one host, and a
# lost worker then stalls the run for --sync_stall_s before it goes on.
ASYNC_STEPS_PER_CLOSURE = 10


def define_flags(fv: flags.FlagValues) -> None:
  common_flags.define_sgd_flags(fv)
  flags.DEFINE_enum("ps_mode", "async", PS_MODES, "async: every worker step updates "
                    "the variables at once (TF's native behaviour); sync: each global step "
                    "aggregates one gradient per worker, then applies one update.", flag_values=fv)
  flags.DEFINE_enum("sync_aggregation", "mean", SYNC_AGGREGATIONS, "How sync mode combines the "
                    "N gradients of a global step.", flag_values=fv)
  flags.DEFINE_integer("steps_per_closure", None, "Training steps a worker runs per "
                       "scheduled closure (amortises the coordinator round trip; default "
                       f"{ASYNC_STEPS_PER_CLOSURE} async, 1 sync). Sync with K > 1: N "
                       "closures at once that meet at a barrier on the ps every step "
                       "(barrier.py); 1: N gradient closures and one apply closure a step.",
                       flag_values=fv)
  flags.DEFINE_float("sync_stall_s", 30.0, "Sync with --steps_per_closure > 1: seconds "
                     "without a global step, while closures wait at the barrier, before the "
                     "chief breaks it (a lost worker) and goes on one step a closure.",
                     flag_values=fv)
  common_flags.define_profile_flags(fv, "every task (chief, workers, ps) at once")
  flags.DEFINE_integer("min_shard_bytes", 256 << 10, "With several ps tasks, variables are "
                       "partitioned into shards of at least this many bytes.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.ApproachConfig):
  train: config_lib.TrainConfig
  ps_mode: str = "async"
  sync_aggregation: str = "mean"
  steps_per_closure: int | None = None
  sync_stall_s: float = 30.0
  min_shard_bytes: int = 256 << 10
  profile_ms: int = 0
  profile_at_step: int = 50

  def __post_init__(self):
    check_choice("ps_mode", self.ps_mode, PS_MODES)
    check_choice("sync_aggregation", self.sync_aggregation, SYNC_AGGREGATIONS)
    if self.steps_per_closure is not None:
      config_lib.check_positive("steps_per_closure", self.steps_per_closure)
    if not self.sync_stall_s > 0:
      raise ConfigError(f"--sync_stall_s must be > 0, got {self.sync_stall_s}")
    config_lib.check_positive("min_shard_bytes", self.min_shard_bytes)
    config_lib.check_profile(self.profile_ms, self.profile_at_step)

  @property
  def sync(self) -> bool:
    return self.ps_mode == "sync"

  @property
  def closure_steps(self) -> int:
    """--steps_per_closure, or the mode's default."""
    if self.steps_per_closure is not None:
      return self.steps_per_closure
    return 1 if self.sync else ASYNC_STEPS_PER_CLOSURE
