"""Flag definitions for every trainer, importable without TensorFlow.

The launcher defines the same flags into a private FlagValues to reject an
unknown trainer flag or bad value *before* it starts any process.
"""

import os

from absl import flags

from cluster import approaches
from trainers import fedavg_math, gossip_math

SYNTHETIC = "synthetic"  # --dataset of the generated set (no TFDS)


def resolve_data_dir(data_dir: str | None, environ=os.environ) -> str:
  """The directory TFDS will search: --data_dir, else $TFDS_DATA_DIR, else TFDS's default."""
  if data_dir:
    return os.path.abspath(os.path.expanduser(data_dir))
  env = environ.get("TFDS_DATA_DIR")
  if env:
    return os.path.abspath(os.path.expanduser(env))
  return os.path.expanduser("~/tensorflow_datasets")


# The valid values of every choice flag; the configs validate against the same tuples.
MODELS = ("mlp", "cnn", "fedavg_2nn", "fedavg_cnn", "small_cnn")
OPTIMIZERS = ("sgd", "momentum", "adam")
LR_SCHEDULES = ("constant", "cosine")
COMMUNICATIONS = ("auto", "ring", "nccl")
PS_MODES = ("async", "sync")
SYNC_AGGREGATIONS = ("mean", "sum")
EXCHANGES = ("params", "gradients")
SERVER_OPTIMIZERS = ("sgd", "momentum", "adam", "yogi", "adagrad")
# FedAvg the algorithm shares its name with FedAvg the approach.
FEDAVG_ALGORITHM = approaches.FEDAVG.name
FED_ALGORITHMS = (FEDAVG_ALGORITHM, "fedprox", "fedsgd", "scaffold")
FED_AGGREGATORS = ("mean", "compression")
CLUSTER_RESOLVERS = ("tf_config", "slurm")


def define_base_flags(fv: flags.FlagValues) -> None:
  """Flags every approach shares: data, model, seed, outputs, fault injection."""
  flags.DEFINE_string("dataset", "mnist", "TFDS name of a 28x28x1 10-class dataset "
                      "(mnist, fashion_mnist, kmnist, ...) or 'synthetic'.", flag_values=fv)
  flags.DEFINE_string("data_dir", None, "TFDS data directory (default: $TFDS_DATA_DIR, "
                      "else TFDS's default).", flag_values=fv)
  flags.DEFINE_integer("synthetic_examples", 6000, "Training examples of --dataset=synthetic.",
                       flag_values=fv)
  flags.DEFINE_enum("model", "mlp", MODELS, "Model from the models/ registry.", flag_values=fv)
  flags.DEFINE_integer("seed", 42, "Seed for weights, sharding and shuffling.", flag_values=fv)
  flags.DEFINE_enum("partition", "iid", fedavg_math.PARTITIONS, "How the training set is "
                    "split among the workers (FedAvg: the clients). iid: shuffled equal "
                    "parts; shards: McMahan et al.'s 2 label-sorted shards per part; "
                    "dirichlet: label mix per part from Dir(--dirichlet_alpha).",
                    flag_values=fv)
  flags.DEFINE_float("dirichlet_alpha", 0.5, "Concentration of --partition=dirichlet.",
                     flag_values=fv)
  flags.DEFINE_string("run_dir", None, "Output directory (default: runs/<approach>-<time>).",
                      flag_values=fv)
  flags.DEFINE_bool("resume", False, "Continue from the run dir's latest checkpoint (PS: "
                    "ckpt/, gossip: each worker's, FedAvg: the server state); with none, "
                    "start from scratch and say so. All-reduce always resumes from backup/.",
                    flag_values=fv)
  flags.DEFINE_string("fail_task", None, "Fault injection: task 'role:index' that crashes "
                      "(exit 3) at --fail_at_step.", flag_values=fv)
  flags.DEFINE_integer("fail_at_step", None, "Fault injection: global step (FedAvg: round) "
                       "at which --fail_task crashes.", flag_values=fv)
  flags.DEFINE_enum("cluster_resolver", "tf_config", CLUSTER_RESOLVERS, "Where this "
                    "task learns the cluster: TF_CONFIG (the launcher, Kubernetes TFJob) or "
                    "Slurm's srun environment (SlurmClusterResolver).", flag_values=fv)
  flags.DEFINE_float("startup_timeout", 120.0, "Seconds to wait for every peer task in "
                     "TF_CONFIG to answer at start-up; then exit (69) naming the silent "
                     "ones (0: wait for ever).", flag_values=fv)
  flags.DEFINE_float("target_accuracy", None, "Time-to-accuracy: record when the test "
                     "accuracy first reaches this (seconds from the launcher's start and from "
                     "the first step, examples, steps or rounds, bytes).", flag_values=fv)
  flags.DEFINE_bool("stop_at_target", False, "Stop at the first evaluation that reaches "
                    "--target_accuracy (every worker stops at the same step).", flag_values=fv)
  flags.DEFINE_integer("slurm_port_base", 8888, "Slurm: first port of each node's tasks.",
                       flag_values=fv)
  flags.DEFINE_integer("slurm_num_ps", 1, "Slurm, approach ps: tasks after the chief that "
                       "are parameter servers (the rest are workers).", flag_values=fv)


def define_common_flags(fv: flags.FlagValues) -> None:
  """Base flags plus minibatch-SGD training flags (all approaches but FedAvg)."""
  define_base_flags(fv)
  flags.DEFINE_integer("batch_size", 64, "Batch size per worker.", flag_values=fv)
  flags.DEFINE_integer("epochs", 1, "Training epochs.", flag_values=fv)
  flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch "
                       "(default: one pass over each worker's shard).", flag_values=fv)
  flags.DEFINE_float("learning_rate", 2e-3, "Initial learning rate.", flag_values=fv)
  flags.DEFINE_enum("lr_schedule", "cosine", LR_SCHEDULES, "Learning-rate schedule "
                    "over the whole run (cosine: decays to 0 at the last step).", flag_values=fv)
  flags.DEFINE_enum("optimizer", "adam", OPTIMIZERS, "Optimizer.", flag_values=fv)
  flags.DEFINE_integer("log_every", 100, "Print and record metrics every N steps.",
                       flag_values=fv)
  flags.DEFINE_integer("eval_every_examples", None, "Also evaluate the full test split "
                       "every this many training examples (all workers together), not "
                       "only at each epoch's end.", flag_values=fv)


def define_allreduce_flags(fv: flags.FlagValues) -> None:
  define_common_flags(fv)
  flags.DEFINE_enum("communication", "auto", COMMUNICATIONS,
                    "Collective implementation for MultiWorkerMirroredStrategy.", flag_values=fv)
  flags.DEFINE_integer("steps_per_execution", 10, "Training steps per Keras function call "
                       "(fewer Python round trips; progress and fault injection see every "
                       "K-th step).", flag_values=fv)
  flags.DEFINE_integer("bytes_per_pack", 0, "Split the gradient all-reduce into packs of "
                       "about this many bytes, which run concurrently (0: one pack; TF's "
                       "CommunicationOptions).", flag_values=fv)
  flags.DEFINE_bool("plain_keras", False, "Single process only: plain Keras fit with no "
                    "tf.distribute strategy (the benchmarks' baseline).", flag_values=fv)


def define_ps_flags(fv: flags.FlagValues) -> None:
  define_common_flags(fv)
  flags.DEFINE_enum("ps_mode", "async", PS_MODES, "async: every worker step updates "
                    "the variables at once (TF's native behaviour); sync: each global step "
                    "aggregates one gradient per worker, then applies one update.", flag_values=fv)
  flags.DEFINE_enum("sync_aggregation", "mean", SYNC_AGGREGATIONS, "How sync mode combines the "
                    "N gradients of a global step.", flag_values=fv)
  flags.DEFINE_integer("steps_per_closure", 10, "Async mode: training steps a worker runs per "
                       "scheduled closure (amortises the coordinator round trip).", flag_values=fv)
  flags.DEFINE_integer("min_shard_bytes", 256 << 10, "With several ps tasks, variables are "
                       "partitioned into shards of at least this many bytes.", flag_values=fv)


def define_gossip_flags(fv: flags.FlagValues) -> None:
  define_common_flags(fv)
  flags.DEFINE_enum("topology", "ring", gossip_math.TOPOLOGIES,
                    "Who gossips with whom.", flag_values=fv)
  flags.DEFINE_enum("mixing", "metropolis", gossip_math.MIXINGS,
                    "Mixing weights (both symmetric and doubly stochastic).", flag_values=fv)
  flags.DEFINE_integer("gossip_every", 1, "Exchange with the neighbours every K local steps.",
                       flag_values=fv)
  flags.DEFINE_enum("exchange", "params", EXCHANGES, "params: D-PSGD, average "
                    "the models; gradients: average the gradients before each update "
                    "(with --topology=full: the seed's decentralized all-gradient scheme).",
                    flag_values=fv)
  flags.DEFINE_bool("independent_init", False, "Each worker draws its own initial weights "
                    "(seed + worker index) instead of identical replicas: shows gossip alone "
                    "driving the replicas to consensus.", flag_values=fv)


def define_fedavg_flags(fv: flags.FlagValues) -> None:
  define_base_flags(fv)
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
  flags.DEFINE_integer("eval_every", 1, "Evaluate the server model on the full test split "
                       "every N rounds (and after the last).", flag_values=fv)


# approach -> its flags (keyed by the records: the names live in cluster.approaches).
_DEFINERS = {
    approaches.ALLREDUCE.name: define_allreduce_flags,
    approaches.PS.name: define_ps_flags,
    approaches.GOSSIP.name: define_gossip_flags,
    approaches.FEDAVG.name: define_fedavg_flags,
}


def define_flags_for(approach: str, fv: flags.FlagValues) -> None:
  _DEFINERS[approaches.get(approach).name](fv)


def parse(fv: flags.FlagValues, argv: list[str]) -> flags.FlagValues:
  """Parses argv (argv[0] the program) into `fv`; flags.Error on a bad flag or a
  stray argument."""
  leftover = fv(argv)
  if len(leftover) > 1:
    raise flags.Error(f"unexpected arguments: {' '.join(leftover[1:])}")
  return fv


def check_trainer_argv(approach: str, argv: list[str]) -> flags.FlagValues:
  """Parses `argv` against `approach`'s flags; raises flags.Error on a bad flag.
  Returns the parsed values (the launcher's preflight reads --dataset from them)."""
  fv = flags.FlagValues()
  define_flags_for(approach, fv)
  return parse(fv, ["trainer"] + list(argv))
