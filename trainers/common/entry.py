"""The edge where a trainer's flags are read: parse, validate, run, map errors to exit codes."""

import os
import sys
from typing import Callable, MutableMapping

from absl import flags

from cluster import approaches, slurm
from trainers.common.errors import ConfigError, DataError

USAGE_EXIT = 2


def run_main(define: Callable[[flags.FlagValues], None],
             run: Callable[[flags.FlagValues], object],
             argv: list[str] | None = None, approach: str | None = None) -> int:
  """Defines flags on a fresh FlagValues, parses argv and calls run(flag_values).

  Usage and data errors become one line on stderr and exit code 2 (data missing:
  exit 1), never a traceback; anything else propagates.
  """
  fv = flags.FlagValues()
  define(fv)
  argv = sys.argv if argv is None else argv
  try:
    leftover = fv(argv)
    if len(leftover) > 1:
      raise flags.Error(f"unexpected arguments: {' '.join(leftover[1:])}")
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_EXIT
  try:
    if approach is not None:
      resolve_cluster(fv, approach)
    run(fv)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return USAGE_EXIT
  except DataError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  return 0


def resolve_cluster(fv: flags.FlagValues, approach: str,
                    environ: MutableMapping[str, str] = os.environ) -> None:
  """Edge step run before TF starts: with --cluster_resolver=slurm, turn the srun
  environment into this process's TF_CONFIG (the one contract every trainer reads),
  its GPUs and the address its servers listen on."""
  if getattr(fv, "cluster_resolver", "tf_config") != "slurm":
    return
  # GPUs: if Slurm already binds them per task (--gpus-per-task), keep its binding;
  # else the node's visible GPUs are divided among its tasks, one set per task.
  num_gpus = 0 if "SLURM_GPUS_PER_TASK" in environ else len(
      [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()])
  task = slurm.resolve(environ, approaches.get(approach), fv.slurm_num_ps,
                       fv.slurm_port_base, num_gpus)
  environ["TF_CONFIG"] = task.tf_config
  if num_gpus:
    environ["CUDA_VISIBLE_DEVICES"] = task.cuda_visible_devices
  environ["TFDIST_BIND_ADDRESS"] = task.bind_address
