"""FedAvg's configuration, which is also the recipe of its learning process
(fed_algorithms.build): validated values, importable without TensorFlow, so the
launcher refuses a bad federated flag with one line before any process starts."""

import dataclasses

from cluster.errors import ConfigError, check_choice
from trainers import flags as trainer_flags
from trainers.common import config as config_lib

# Defaults per server optimizer (Reddi et al. 2021 use 1e-2-ish for the adaptive ones).
SERVER_LR = {"sgd": 1.0, "momentum": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.1}
FEDSGD_SERVER_LR = 0.1  # FedSGD's server step is a gradient step: 1.0 would diverge
COMPRESSION_BITS = 8    # tff.learning.compression_aggregator's uniform quantization


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
  train: config_lib.TrainConfig  # dataset, model, seed, run_dir, fault injection
  num_clients: int = 100
  clients_per_round: int = 10
  local_epochs: int = 1
  local_batch_size: int = 10
  rounds: int = 10
  client_learning_rate: float = 0.1
  server_optimizer: str = "sgd"
  server_learning_rate: float | None = None
  algorithm: str = trainer_flags.FEDAVG_ALGORITHM
  proximal_strength: float | None = None
  aggregator: str = "mean"
  dp_noise_multiplier: float | None = None
  dp_clip: float | None = None
  dp_delta: float = 1e-5
  client_dropout: float = 0.0
  eval_every: int = 1

  def __post_init__(self):
    check_choice("server_optimizer", self.server_optimizer, trainer_flags.SERVER_OPTIMIZERS)
    for name in ("num_clients", "clients_per_round", "local_epochs", "local_batch_size",
                 "rounds", "eval_every"):
      config_lib.check_positive(name, getattr(self, name))
    if self.clients_per_round > self.num_clients:
      raise ConfigError(f"--clients_per_round={self.clients_per_round} exceeds "
                        f"--num_clients={self.num_clients}")
    if not self.client_learning_rate > 0:
      raise ConfigError(f"--client_learning_rate must be > 0, got {self.client_learning_rate}")
    check_choice("algorithm", self.algorithm, trainer_flags.FED_ALGORITHMS)
    check_choice("aggregator", self.aggregator, trainer_flags.FED_AGGREGATORS)
    if (self.algorithm == "fedprox") != (self.proximal_strength is not None):
      raise ConfigError("--proximal_strength goes with --algorithm=fedprox (and it needs "
                        f"it); got --algorithm={self.algorithm}, --proximal_strength="
                        f"{self.proximal_strength}")
    if self.proximal_strength is not None and not self.proximal_strength >= 0:
      raise ConfigError(f"--proximal_strength must be >= 0, got {self.proximal_strength}")
    if self.dp_noise_multiplier is not None and not self.dp_noise_multiplier >= 0:
      raise ConfigError(f"--dp_noise_multiplier must be >= 0, got {self.dp_noise_multiplier}")
    if self.dp_clip is not None:
      if self.dp_noise_multiplier is None:
        raise ConfigError("--dp_clip needs --dp_noise_multiplier")
      if not self.dp_clip > 0:
        raise ConfigError(f"--dp_clip must be > 0, got {self.dp_clip}")
    if (self.dp_noise_multiplier is not None and self.dp_clip is None and
        self.dp_noise_multiplier >= 0.1 * self.clients_per_round):
      # TFF's adaptive clipping spends part of the noise on estimating the clip norm
      # (a clipped-count stddev of 0.05 x clients per round): it needs more clients.
      raise ConfigError(f"--dp_noise_multiplier={self.dp_noise_multiplier:g} with adaptive "
                        f"clipping needs --clients_per_round > "
                        f"{10 * self.dp_noise_multiplier:g} (TFF's dp_aggregator); raise it "
                        "or give a fixed --dp_clip")
    if not 0 < self.dp_delta < 1:
      raise ConfigError(f"--dp_delta must be in (0, 1), got {self.dp_delta}")
    if self.dp_noise_multiplier is not None and (self.aggregator != "mean" or
                                                 self.algorithm == "fedsgd"):
      raise ConfigError("--dp_noise_multiplier is its own aggregator, for fedavg and "
                        "fedprox: drop --aggregator=compression / --algorithm=fedsgd")
    if self.algorithm == "scaffold" and (self.server_optimizer != "sgd" or
                                         self.aggregator != "mean" or self.private):
      raise ConfigError("--algorithm=scaffold takes its server step with plain sgd over the "
                        "mean of the updates: drop --server_optimizer / --aggregator / "
                        "--dp_noise_multiplier")
    if not 0 <= self.client_dropout < 1:
      raise ConfigError(f"--client_dropout must be in [0, 1), got {self.client_dropout}")
    if self.server_learning_rate is None:
      object.__setattr__(self, "server_learning_rate", (
          FEDSGD_SERVER_LR if (self.algorithm, self.server_optimizer) ==
          ("fedsgd", "sgd") else SERVER_LR[self.server_optimizer]))
    if not self.server_learning_rate > 0:
      raise ConfigError(f"--server_learning_rate must be > 0, got {self.server_learning_rate}")

  @property
  def private(self) -> bool:
    """Differential privacy: the updates go through TFF's (unweighted) DP aggregator."""
    return self.dp_noise_multiplier is not None
