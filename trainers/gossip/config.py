"""Gossip's flags and validated config, importable without TensorFlow."""

import dataclasses

from absl import flags

from cluster import approaches
from cluster.errors import ConfigError, check_choice
from trainers.common import config as config_lib
from trainers.common import flags as common_flags
from trainers.gossip import mixing as mixing_lib

APPROACH = approaches.GOSSIP.name
EXCHANGES = ("params", "gradients")
MODES = ("sync", "async")


def define_flags(fv: flags.FlagValues) -> None:
  common_flags.define_sgd_flags(fv)
  flags.DEFINE_enum("topology", "ring", mixing_lib.TOPOLOGIES,
                    "Who gossips with whom.", flag_values=fv)
  flags.DEFINE_enum("mixing", "metropolis", mixing_lib.MIXINGS,
                    "Mixing weights (both symmetric and doubly stochastic).", flag_values=fv)
  flags.DEFINE_enum("gossip_mode", "sync", MODES, "sync: D-PSGD, every exchange a "
                    "collective with the neighbours (a slow one delays them); async: each "
                    "worker mixes with the newest model it holds from each neighbour and "
                    "puts its own into theirs, never waiting (a slow neighbour's stale "
                    "model is mixed when it arrives).", flag_values=fv)
  flags.DEFINE_integer("gossip_every", 1, "Exchange with the neighbours every K local steps.",
                       flag_values=fv)
  flags.DEFINE_enum("exchange", "params", EXCHANGES, "params: D-PSGD, average "
                    "the models; gradients: average the gradients before each update "
                    "(with --topology=full: the seed's decentralized all-gradient scheme).",
                    flag_values=fv)
  flags.DEFINE_bool("independent_init", False, "Each worker draws its own initial weights "
                    "(seed + worker index) instead of identical replicas: shows gossip alone "
                    "driving the replicas to consensus.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.ApproachConfig):
  train: config_lib.TrainConfig
  topology: str = "ring"
  mixing: str = "metropolis"
  gossip_every: int = 1
  exchange: str = "params"
  independent_init: bool = False
  gossip_mode: str = "sync"

  def __post_init__(self):
    check_choice("topology", self.topology, mixing_lib.TOPOLOGIES)
    check_choice("mixing", self.mixing, mixing_lib.MIXINGS)
    check_choice("exchange", self.exchange, EXCHANGES)
    check_choice("gossip_mode", self.gossip_mode, MODES)
    config_lib.check_positive("gossip_every", self.gossip_every)
    if self.is_async:
      if self.exchange != "params":
        raise ConfigError("--gossip_mode=async mixes parameters; --exchange=gradients is "
                          "synchronous only")
      if self.train.resume:
        raise ConfigError("--gossip_mode=async does not resume (its workers stop at "
                          "different steps); start it afresh")

  @property
  def is_async(self) -> bool:
    return self.gossip_mode == "async"

  def check_cluster(self, num_workers: int) -> None:
    try:
      mixing_lib.check_workers(self.topology, num_workers)
    except ValueError as e:
      raise ConfigError(str(e)) from e
