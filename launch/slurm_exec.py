"""Run a user's program as one task of a Slurm job: resolve this srun task's TF_CONFIG
(cluster/slurm.py, the layout of TF's SlurmClusterResolver), its GPUs and the address
its servers listen on, then exec the program with them (launch/slurm/program.sbatch).

    srun python -m launch.slurm_exec --approach=allreduce -- python train.py --epochs=1
"""

import os
import sys

from absl import flags

from cluster import approaches, cli, slurm
from cluster.errors import ConfigError
from launch import program as program_lib


def define_flags(fv: flags.FlagValues) -> None:
  flags.DEFINE_enum("approach", approaches.ALLREDUCE.name, list(approaches.APPROACHES),
                    "The cluster's shape (allreduce, gossip: workers; ps: chief, ps, workers; "
                    "fedavg: chief and workers).", flag_values=fv)
  flags.DEFINE_integer("num_ps", 1, "ps tasks (approach=ps).", flag_values=fv)
  flags.DEFINE_integer("port_base", 8888, "First port of each node's tasks.", flag_values=fv)


def program_env(environ, approach: str, num_ps: int, port_base: int) -> dict[str, str]:
  """The variables the program gets on top of srun's (ConfigError: one line)."""
  num_gpus = 0 if "SLURM_GPUS_PER_TASK" in environ else len(
      [d for d in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()])
  task = slurm.resolve(environ, approaches.get(approach), num_ps, port_base, num_gpus)
  env = {"TF_CONFIG": task.tf_config, "TFDIST_BIND_ADDRESS": task.bind_address}
  if num_gpus:
    env["CUDA_VISIBLE_DEVICES"] = task.cuda_visible_devices
  return env


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv if argv is None else argv
  fv = flags.FlagValues()
  define_flags(fv)
  prog = cli.prog("launch.slurm_exec")
  cli.exit_if_answered(argv, fv, prog, __doc__)
  try:
    program = fv(argv)[1:]
    if not program:
      raise flags.Error("no program: give it after `--`")
    env = dict(os.environ, **program_env(os.environ, fv.approach, fv.num_ps, fv.port_base))
  except (flags.Error, ConfigError) as e:
    print(f"{prog}: error: {e}", file=sys.stderr)
    return 2
  program = list(program_lib.program_argv(program, sys.executable))
  try:
    os.execvpe(program[0], program, env)
  except OSError as e:
    print(f"{prog}: error: cannot start {program[0]}: {e.strerror}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
