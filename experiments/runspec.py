"""One run of an experiment, described once and launched one way (no TF).

compare, bench, the regime grid, the scaling sweep, the paper preset and the peers
all build a RunSpec (what to launch, where, with which data, flags and environment)
and hand it to `launch`, which runs it through the launcher as a user would
(`python -m launch.local ...`, in this process) and records how the launcher ended
(experiments/outcome.py). Only exit_paths writes its own command lines: it must start
the launcher as a separate process to signal it.
"""

import dataclasses
import sys
import time
from typing import Mapping, Sequence

from cluster import cli
from experiments import outcome
from experiments.budget import Budget
from launch import local


@dataclasses.dataclass(frozen=True)
class Data:
  """The model and data every run of an experiment trains on."""
  model: str
  dataset: str = "mnist"
  data_dir: str | None = None
  synthetic_examples: int | None = None

  def trainer_args(self) -> tuple[str, ...]:
    return (f"--model={self.model}", f"--dataset={self.dataset}",
            *((f"--data_dir={self.data_dir}",) if self.data_dir else ()),
            *((f"--synthetic_examples={self.synthetic_examples}",)
              if self.synthetic_examples else ()))


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """One launch: the launcher's approach (the cluster's shape), its flags, and either
  the suite's trainer flags or a program (a peer) that every task runs."""
  name: str                              # the row's name (a variant, a peer)
  run_dir: str
  approach: str
  launcher_args: tuple[str, ...] = ()
  trainer_args: tuple[str, ...] = ()
  program: tuple[str, ...] = ()          # instead of the suite's trainer
  env: tuple[tuple[str, str], ...] = ()  # added to every task's environment
  description: str = ""
  examples: int | None = None            # the most examples it will process
  seed: int | None = None                # one of several seeds (None: the only run)

  @property
  def label(self) -> str:
    return self.name + (f" seed {self.seed}" if self.seed is not None else "")

  def __post_init__(self):
    if self.program and self.trainer_args:
      raise ValueError(f"{self.name}: a program run takes no trainer flags")
    object.__setattr__(self, "env", tuple(sorted(dict(self.env).items())))

  @property
  def timeout_s(self) -> float | None:
    """The launcher's --timeout (the last one given), None when there is none."""
    given = cli.flag_value(self.launcher_args, "timeout")
    return None if given is None else float(given)

  def argv(self) -> list[str]:
    """The launcher's command line (argv[0] included)."""
    return ["launch", f"--approach={self.approach}", *self.launcher_args,
            f"--run_dir={self.run_dir}", "--", *(self.program or self.trainer_args)]

  def with_args(self, launcher_args: Sequence[str] = (), trainer_args: Sequence[str] = (),
                env: Mapping[str, str] | None = None) -> "RunSpec":
    """The same run with flags (a regime's, a timeout) and variables added."""
    extra = tuple(trainer_args)
    # A peer's program takes the suite's trainer flags as its own.
    args = ({"program": self.program + extra} if self.program else
            {"trainer_args": self.trainer_args + extra})
    return dataclasses.replace(
        self, launcher_args=self.launcher_args + tuple(launcher_args),
        env=tuple({**dict(self.env), **(env or {})}.items()), **args)


def of_budget(name: str, plan: Budget, run_dir: str, data: Data,
              extra_trainer_args: Sequence[str] = (), **fields) -> RunSpec:
  """The run of variant `name` that spends `plan` on `data`."""
  return RunSpec(name=name, run_dir=run_dir, approach=plan.approach,
                 launcher_args=plan.launcher_args,
                 trainer_args=(*data.trainer_args(), *extra_trainer_args, *plan.trainer_args),
                 description=plan.description, examples=plan.examples, **fields)


def launch(spec: RunSpec, console=sys.stdout) -> int:
  """Runs `spec` through the launcher; records and returns its exit code."""
  started = time.time()
  code = local.main(spec.argv(), console=console, env=dict(spec.env))
  outcome.record_exit(spec.run_dir, code, time.time() - started)
  return code
