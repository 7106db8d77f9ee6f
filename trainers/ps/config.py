"""The parameter server's flags and validated config, importable without TensorFlow."""

import dataclasses

from absl import flags

from cluster import approaches
from cluster.errors import check_choice
from trainers.common import config as config_lib
from trainers.common import flags as common_flags

APPROACH = approaches.PS.name
PS_MODES = ("async", "sync")
SYNC_AGGREGATIONS = ("mean", "sum")


def define_flags(fv: flags.FlagValues) -> None:
  common_flags.define_sgd_flags(fv)
  flags.DEFINE_enum("ps_mode", "async", PS_MODES, "async: every worker step updates "
                    "the variables at once (TF's native behaviour); sync: each global step "
                    "aggregates one gradient per worker, then applies one update.", flag_values=fv)
  flags.DEFINE_enum("sync_aggregation", "mean", SYNC_AGGREGATIONS, "How sync mode combines the "
                    "N gradients of a global step.", flag_values=fv)
  flags.DEFINE_integer("steps_per_closure", 10, "Async mode: training steps a worker runs per "
                       "scheduled closure (amortises the coordinator round trip).", flag_values=fv)
  common_flags.define_profile_flags(fv, "every task (chief, workers, ps) at once")
  flags.DEFINE_integer("min_shard_bytes", 256 << 10, "With several ps tasks, variables are "
                       "partitioned into shards of at least this many bytes.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.ApproachConfig):
  train: config_lib.TrainConfig
  ps_mode: str = "async"
  sync_aggregation: str = "mean"
  steps_per_closure: int = 10
  min_shard_bytes: int = 256 << 10
  profile_ms: int = 0
  profile_at_step: int = 50

  def __post_init__(self):
    check_choice("ps_mode", self.ps_mode, PS_MODES)
    check_choice("sync_aggregation", self.sync_aggregation, SYNC_AGGREGATIONS)
    config_lib.check_positive("steps_per_closure", self.steps_per_closure)
    config_lib.check_positive("min_shard_bytes", self.min_shard_bytes)
    config_lib.check_profile(self.profile_ms, self.profile_at_step)

  @property
  def sync(self) -> bool:
    return self.ps_mode == "sync"
