"""FedAvg's flags and configuration, which is also the recipe of its learning process
(process.build): validated values, importable without TensorFlow, so the launcher
refuses a bad federated flag with one line before any process starts."""

import dataclasses

from absl import flags

from cluster import approaches, cli
from cluster.errors import ConfigError, check_choice
from trainers.common import config as config_lib
from trainers.common import flags as common_flags

APPROACH = approaches.FEDAVG.name
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")
# FedAvg the algorithm shares its name with FedAvg the approach.
FEDAVG_ALGORITHM = APPROACH
FED_ALGORITHMS = (FEDAVG_ALGORITHM, "fedprox", "fedsgd", "scaffold")
FED_AGGREGATORS = ("mean", "compression")

# Defaults per server optimizer (Reddi et al. 2021 use 1e-2-ish for the adaptive ones).
SERVER_LR = {"sgd": 1.0, "momentum": 1.0, "adam": 0.01, "yogi": 0.01, "adagrad": 0.1}
FEDSGD_SERVER_LR = 0.1  # FedSGD's server step is a gradient step: 1.0 would diverge
COMPRESSION_BITS = 8    # tff.learning.compression_aggregator's uniform quantization
# Where the clients' work runs: TFF's worker_binary (native), or TFF's MapReduceForm of
# the round as plain TF graphs on TF's own runtime (mapreduce.py); auto: mapreduce, the
# faster (BENCHMARKS.md, issue 32), wherever the run has a MapReduceForm, else native.
AUTO, NATIVE, MAPREDUCE = "auto", "native", "mapreduce"
BACKENDS = (AUTO, NATIVE, MAPREDUCE)


def resolve_backend(requested: str, algorithm: str, client_scores: bool) -> str:
  """Pure: the backend a run uses. Every task resolves it alike from its flags (the
  services must know whether to be TFF executors or TF servers). auto gives native
  only where mapreduce cannot run: SCAFFOLD's client state, per-client scores."""
  if requested != AUTO:
    return requested
  return NATIVE if algorithm == "scaffold" or client_scores else MAPREDUCE


def backend_of_args(args) -> str:
  """Pure: the backend that trainer arguments (a run spec's --flag=value list) resolve to."""
  scores = next((a == "--client_scores" for a in reversed(args)
                 if a in ("--client_scores", "--noclient_scores")), False)
  return resolve_backend(cli.flag_value(args, "fedavg_backend", AUTO),
                         cli.flag_value(args, "algorithm", FEDAVG_ALGORITHM), scores)


def define_flags(fv: flags.FlagValues) -> None:
  common_flags.define_base_flags(fv)
  flags.DEFINE_integer("num_clients", 100, "Clients the training set is split into (K).",
                       flag_values=fv)
  flags.DEFINE_integer("clients_per_round", 10, "Clients sampled per round (C*K).",
                       flag_values=fv)
  flags.DEFINE_integer("local_epochs", 1, "Local epochs per round (E).", flag_values=fv)
  flags.DEFINE_integer("local_batch_size", 10, "Local batch size (B).", flag_values=fv)
  flags.DEFINE_integer("rounds", 10, "Communication rounds.", flag_values=fv)
  flags.DEFINE_float("client_learning_rate", 0.1, "Client SGD learning rate.", flag_values=fv)
  flags.DEFINE_enum("algorithm", FEDAVG_ALGORITHM, FED_ALGORITHMS, "fedavg; fedprox (adds "
                    "--proximal_strength/2 ||w - w_server||^2 to each client's loss); fedsgd "
                    "(one gradient per client on all its data); scaffold (control variates "
                    "correct each local step for client drift; server sgd, mean aggregator).", flag_values=fv)
  flags.DEFINE_float("proximal_strength", None, "FedProx's mu (with --algorithm=fedprox, "
                     "which needs it).", flag_values=fv)
  flags.DEFINE_enum("server_optimizer", "sgd", SERVER_OPTIMIZERS, "Server optimizer: sgd "
                    "(FedAvg), momentum (FedAvgM, 0.9), adam (FedAdam), yogi (FedYogi), "
                    "adagrad (FedAdagrad).", flag_values=fv)
  flags.DEFINE_float("server_learning_rate", None, "Server learning rate (default: 1.0 "
                     "for sgd and momentum, 0.01 for adam and yogi, 0.1 for adagrad; "
                     "fedsgd with sgd: 0.1).", flag_values=fv)
  flags.DEFINE_enum("aggregator", "mean", FED_AGGREGATORS, "How the client updates are "
                    "combined: mean (weighted), compression (TFF's 8-bit uniform "
                    "quantization).", flag_values=fv)
  flags.DEFINE_float("dp_noise_multiplier", None, "Differential privacy: TFF's Gaussian "
                     "DP aggregator with this noise multiplier (unweighted mean); the "
                     "(epsilon, delta) spent is reported every round.", flag_values=fv)
  flags.DEFINE_float("dp_clip", None, "With --dp_noise_multiplier: fixed clipping norm of "
                     "each client update (default: adaptive clipping).", flag_values=fv)
  flags.DEFINE_float("dp_delta", 1e-5, "The delta at which epsilon is reported.",
                     flag_values=fv)
  flags.DEFINE_float("client_dropout", 0.0, "Each sampled client fails to report with this "
                     "probability (seeded); the round aggregates the rest.", flag_values=fv)
  flags.DEFINE_string("client_data_dir", None, "Where the clients' hosts (the executor "
                      "services; the chief with --num_workers=0) find the prepared training "
                      "split (default: --data_dir). The chief reads only the test split.",
                      flag_values=fv)
  flags.DEFINE_bool("client_scores", False, "Score the broadcast model on each sampled "
                    "client's own data inside the round, where the client lives (the "
                    "per-client curves, fedavg_clients.png). Not part of the algorithm: it "
                    "costs a forward pass over the round's client data (15-25 %% of a "
                    "small_cnn round), so a time-to-accuracy race leaves it off.",
                    flag_values=fv)
  flags.DEFINE_integer("eval_every", 1, "Evaluate the server model on the full test split "
                       "every N rounds (and after the last).", flag_values=fv)
  flags.DEFINE_enum("fedavg_backend", AUTO, BACKENDS, "Where the clients train: native "
                    "(TFF's executor service, worker_binary) or mapreduce (TFF compiles the "
                    "round to its MapReduceForm; the services are tf.distribute.Servers "
                    "and TF's own runtime runs the clients' graphs, with TF's kernels). "
                    "mapreduce refuses SCAFFOLD and --client_scores; auto: mapreduce, "
                    "native for those two.", flag_values=fv)


@dataclasses.dataclass(frozen=True)
class Config(config_lib.ApproachConfig):
  train: config_lib.TrainConfig  # dataset, model, seed, run_dir, fault injection
  num_clients: int = 100
  clients_per_round: int = 10
  local_epochs: int = 1
  local_batch_size: int = 10
  rounds: int = 10
  client_learning_rate: float = 0.1
  server_optimizer: str = "sgd"
  server_learning_rate: float | None = None
  algorithm: str = FEDAVG_ALGORITHM
  proximal_strength: float | None = None
  aggregator: str = "mean"
  dp_noise_multiplier: float | None = None
  dp_clip: float | None = None
  dp_delta: float = 1e-5
  client_dropout: float = 0.0
  eval_every: int = 1
  client_data_dir: str | None = None
  client_scores: bool = False
  fedavg_backend: str = AUTO

  def __post_init__(self):
    check_choice("fedavg_backend", self.fedavg_backend, BACKENDS)
    if self.fedavg_backend == MAPREDUCE and self.algorithm == "scaffold":
      raise ConfigError("--fedavg_backend=mapreduce: SCAFFOLD keeps each client's control "
                        "variate between rounds, which a MapReduceForm round cannot hold; "
                        "use --fedavg_backend=native")
    if self.fedavg_backend == MAPREDUCE and self.client_scores:
      raise ConfigError("--fedavg_backend=mapreduce does not score clients: drop "
                        "--client_scores or use --fedavg_backend=native")
    check_choice("server_optimizer", self.server_optimizer, SERVER_OPTIMIZERS)
    for name in ("num_clients", "clients_per_round", "local_epochs", "local_batch_size",
                 "rounds", "eval_every"):
      config_lib.check_positive(name, getattr(self, name))
    if self.clients_per_round > self.num_clients:
      raise ConfigError(f"--clients_per_round={self.clients_per_round} exceeds "
                        f"--num_clients={self.num_clients}")
    if not self.client_learning_rate > 0:
      raise ConfigError(f"--client_learning_rate must be > 0, got {self.client_learning_rate}")
    check_choice("algorithm", self.algorithm, FED_ALGORITHMS)
    check_choice("aggregator", self.aggregator, FED_AGGREGATORS)
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
  def backend(self) -> str:
    """The backend this run uses (--fedavg_backend with auto resolved)."""
    return resolve_backend(self.fedavg_backend, self.algorithm, self.client_scores)

  @property
  def private(self) -> bool:
    """Differential privacy: the updates go through TFF's (unweighted) DP aggregator."""
    return self.dp_noise_multiplier is not None
