"""All-reduce's flags and validated config, importable without TensorFlow (the
launcher refuses a bad value with one line before anything starts)."""

import dataclasses

from absl import flags

from cluster import approaches
from cluster.errors import ConfigError, check_choice
from trainers.common import config as config_lib
from trainers.common import flags as common_flags

APPROACH = approaches.ALLREDUCE.name
COMMUNICATIONS = ("auto", "ring", "nccl")


def define_flags(fv: flags.FlagValues) -> None:
  common_flags.define_sgd_flags(fv)
  flags.DEFINE_enum("communication", "auto", COMMUNICATIONS,
                    "Collective implementation for MultiWorkerMirroredStrategy.", flag_values=fv)
  flags.DEFINE_integer("steps_per_execution", 10, "Training steps per Keras function call "
                       "(fewer Python round trips; progress and fault injection see every "
                       "K-th step).", flag_values=fv)
  flags.DEFINE_integer("bytes_per_pack", 0, "Split the gradient all-reduce into packs of "
                       "about this many bytes, which run concurrently (0: one pack; TF's "
                       "CommunicationOptions).", flag_values=fv)
  common_flags.define_profile_flags(fv, "each worker (itself, in lock step with the others)")
  flags.DEFINE_bool("plain_keras", False, "Single process only: plain Keras fit with no "
                    "tf.distribute strategy (the benchmarks' baseline).", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.ApproachConfig):
  train: config_lib.TrainConfig
  communication: str = "auto"
  plain_keras: bool = False
  steps_per_execution: int = 10
  bytes_per_pack: int = 0
  profile_ms: int = 0
  profile_at_step: int = 50

  def __post_init__(self):
    config_lib.check_profile(self.profile_ms, self.profile_at_step)
    check_choice("communication", self.communication, COMMUNICATIONS)
    config_lib.check_positive("steps_per_execution", self.steps_per_execution)
    if self.bytes_per_pack < 0:
      raise ConfigError(f"--bytes_per_pack must be >= 0, got {self.bytes_per_pack}")
    if self.train.resume:
      raise ConfigError("--resume does not apply to allreduce: it always resumes from its "
                        "run directory's backup/ by itself; drop it")

  def check_cluster(self, num_workers: int) -> None:
    if self.plain_keras and num_workers > 1:
      raise ConfigError("--plain_keras runs one process; drop it or use --num_workers=1")
