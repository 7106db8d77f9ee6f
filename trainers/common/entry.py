"""The edge where a trainer's flags are read: parse, validate, run, map errors to exit codes.

An approach hands in its config module (`spec`): APPROACH (its record's name),
define_flags(fv) and Config (an ApproachConfig), all TF-free; nothing here knows
which approach it serves.
"""

import importlib
import os
import sys
from types import ModuleType
from typing import Any, Callable, MutableMapping

from absl import flags

from cluster import approaches, cli, exits, slurm
from cluster.errors import ConfigError
from cluster.tf_config import TaskInfo, parse_tf_config
from trainers.common import config as config_lib
from trainers.common import flags as common_flags
from trainers.common import lifecycle, startup
from trainers.common.errors import DataError, Diverged

USAGE_EXIT = exits.USAGE
_GRPC_BIND_FAILED = "Could not start gRPC server"  # TF's message when the port is taken


def check_before_tf(spec: ModuleType) -> None:
  """Called by each approach's __main__ before it imports its trainer (and so
  TensorFlow): a bad flag or TF_CONFIG ends the program here with one line and exit
  2 (importing TF first would print its start-up lines and take seconds). With
  --cluster_resolver=slurm, TF_CONFIG is resolved here, so CUDA_VISIBLE_DEVICES is
  set before TF starts."""
  fv = flags.FlagValues()
  spec.define_flags(fv)
  package = spec.__name__.rpartition(".")[0]
  cli.exit_if_answered(sys.argv, fv, cli.prog(f"python -m {package}"),
                       sys.modules[package].__doc__)
  try:
    common_flags.parse(fv, sys.argv)
    config = spec.Config.from_flags(fv, spec.APPROACH)  # what can be checked without TF
    resolve_cluster(fv, spec.APPROACH)
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    config.check_cluster(task.num_workers)
    check_run_dir(config.train.run_dir)
    if approaches.get(spec.APPROACH).has_ps and "ps" not in task.cluster:
      raise ConfigError(f"approach {spec.APPROACH} needs a TF_CONFIG with chief, worker and "
                        "ps tasks; start it with the launcher: python -m launch.local "
                        f"--approach={spec.APPROACH} --num_workers=2 --num_ps=1")
  except (flags.Error, ConfigError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(USAGE_EXIT)


def check_run_dir(run_dir: str | None) -> None:
  """--run_dir may be a directory or not exist yet; a file there is a usage error."""
  if run_dir and os.path.exists(run_dir) and not os.path.isdir(run_dir):
    raise ConfigError(f"--run_dir={run_dir} is a file, not a directory")


def run_package(spec: ModuleType, trainer: str) -> None:
  """An approach package's __main__: its flags checked before TF, then its trainer
  module (`trainer`, which imports TF) imported and run; exits with its code."""
  check_before_tf(spec)
  with cli.quiet_tf_startup():
    module = importlib.import_module(trainer)
  sys.exit(module.run_main())


def trainer_main(spec: ModuleType, run: Callable[..., Any], argv: list[str] | None = None,
                 after: Callable[[TaskInfo, Any], None] | None = None) -> int:
  """A trainer's whole edge: its flags -> its config (validated) -> TF_CONFIG ->
  run(config, task, flag_values=...) -> exit code. `after(task, result)` runs once
  run() has returned (the PS chief stops its servers there)."""
  def run_from_flags(fv: flags.FlagValues) -> None:
    # Flags and TF_CONFIG are read and validated here, before TF starts.
    startup.mark("import")  # the trainer module (and TF) is imported by now
    config = spec.Config.from_flags(fv, spec.APPROACH)
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    config.check_cluster(task.num_workers)
    if task.task_type in approaches.get(spec.APPROACH).primary_roles:
      lifecycle.await_peers(task, fv.startup_timeout)  # servers simply wait to be used
    startup.mark("peers")
    result = run(config, task, flag_values=config_lib.flag_dict(fv))
    if after is not None:
      after(task, result)

  return run_main(spec.define_flags, run_from_flags, argv, approach=spec.APPROACH)


def run_main(define: Callable[[flags.FlagValues], None],
             run: Callable[[flags.FlagValues], object],
             argv: list[str] | None = None, approach: str | None = None) -> int:
  """Defines flags on a fresh FlagValues, parses argv and calls run(flag_values).

  Usage errors, missing data and divergence become one line on stderr and their
  exit code (cluster/exits.py), never a traceback; anything else propagates.
  """
  fv = flags.FlagValues()
  define(fv)
  argv = sys.argv if argv is None else argv
  cli.exit_if_answered(argv, fv, cli.prog(f"trainers.{approach or 'trainer'}"), None)
  try:
    common_flags.parse(fv, argv)
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
    return exits.DATA
  except Diverged as e:
    print(f"error: diverged: {e}", file=sys.stderr)
    return exits.DIVERGED
  except Exception as e:  # pylint: disable=broad-except
    if _GRPC_BIND_FAILED not in str(e):
      raise
    task = parse_tf_config(os.environ.get("TF_CONFIG"))
    print(f"error: {task.name} could not listen on {task.address} (port in use, or not an "
          "address of this machine)", file=sys.stderr)
    return exits.BIND
  return exits.OK


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
