"""The flags every approach shares (data, model, seed, outputs, faults, cluster) and
minibatch SGD's, importable without TensorFlow. Each approach package defines its own
flags on top (its config.py); trainers/flags.py assembles them per approach.
"""

import os

from absl import flags

from trainers.common import partition

SYNTHETIC = "synthetic"  # --dataset of the generated set (no TFDS)


# The Makefile's default (TFDS_DATA_DIR ?= ../shared/data/tensorflow_datasets): the
# same directory when a command runs from a fresh shell.
SHARED_DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__))))), "shared", "data", "tensorflow_datasets")


def resolve_data_dir(data_dir: str | None, environ=os.environ) -> str:
  """The directory TFDS will search: --data_dir, else $TFDS_DATA_DIR, else the
  Makefile's default beside the checkout (../shared/data/tensorflow_datasets) if it
  exists, else TFDS's default (~/tensorflow_datasets)."""
  if data_dir:
    return os.path.abspath(os.path.expanduser(data_dir))
  env = environ.get("TFDS_DATA_DIR")
  if env:
    return os.path.abspath(os.path.expanduser(env))
  if os.path.isdir(SHARED_DATA_DIR):
    return SHARED_DATA_DIR
  return os.path.expanduser("~/tensorflow_datasets")


# The valid values of every choice flag; the configs validate against the same tuples.
MODELS = ("mlp", "cnn", "fedavg_2nn", "fedavg_cnn", "small_cnn")
OPTIMIZERS = ("sgd", "momentum", "adam")
LR_SCHEDULES = ("constant", "cosine")
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
  flags.DEFINE_enum("partition", "iid", partition.PARTITIONS, "How the training set is "
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


def define_sgd_flags(fv: flags.FlagValues) -> None:
  """Base flags plus minibatch-SGD training flags (all-reduce, PS, gossip)."""
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


def define_profile_flags(fv: flags.FlagValues, who: str) -> None:
  """--profile_ms / --profile_at_step: a TF profiler window over `who` (the PS: every
  task from the chief; all-reduce: each worker over itself), trainers/common/profiling.py."""
  flags.DEFINE_integer("profile_ms", 0, f"Trace {who} with TF's profiler for this many "
                       "ms once the run reaches --profile_at_step (0: no trace); writes "
                       "<run_dir>/profile/breakdown*.json (trainers/common/profiling.py).",
                       flag_values=fv)
  flags.DEFINE_integer("profile_at_step", 50, "The global step the --profile_ms window "
                       "opens at (past the first steps' set-up).", flag_values=fv)


def parse(fv: flags.FlagValues, argv: list[str]) -> flags.FlagValues:
  """Parses argv (argv[0] the program) into `fv`; flags.Error on a bad flag or a
  stray argument."""
  leftover = fv(argv)
  if len(leftover) > 1:
    raise flags.Error(f"unexpected arguments: {' '.join(leftover[1:])}")
  return fv
