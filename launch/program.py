"""A user's program as the tasks' command (pure: parsing and checks, no processes).

The launcher starts either one of the suite's trainers or any program, once per task
with that task's TF_CONFIG, in the manner of torchrun:

    tfdist-launch --num_workers=2 train.py --epochs=1        # python train.py --epochs=1
    tfdist-launch --num_workers=2 -- python -m pkg.mod --x=1 # any command
    tfdist-launch --approach=allreduce --num_workers=2 -- --model=mlp   # a suite trainer

The launcher's own flags come first. The first argument that is neither one of them
(`--name=value`, `--name value`, `--[no]name`) nor `--` begins the program; after
`--`, an argument that does not start with `-` does too, while flags there go to the
suite's trainer. A program whose first word is a `.py` file runs under the launcher's
own Python, and so does one that starts with `python` or `python3`.
"""

import os
import shutil
from typing import Sequence

from absl import flags

PYTHON_NAMES = ("python", "python3")


def split_argv(argv: Sequence[str], fv: flags.FlagValues
               ) -> tuple[list[str], list[str], list[str] | None]:
  """(launcher argv with argv[0], program, trainer flags or None when there is no
  `--` for a trainer). `fv` holds the launcher's flag definitions."""
  head, i = [argv[0]], 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--":
      rest = list(argv[i + 1:])
      if rest and not rest[0].startswith("-"):
        return head, rest, None
      return head, [], rest
    if not arg.startswith("-"):
      return head, list(argv[i:]), None
    head.append(arg)
    name = arg.lstrip("-").split("=", 1)[0]
    if ("=" not in arg and name in fv and not fv[name].boolean and i + 1 < len(argv)):
      head.append(argv[i + 1])  # `--name value`
      i += 1
    i += 1
  return head, [], None


def program_argv(program: Sequence[str], python: str) -> tuple[str, ...]:
  """The command every task runs: a `.py` script or `python ...` under `python`."""
  first, rest = program[0], list(program[1:])
  if first in PYTHON_NAMES:
    return (python, *rest)
  if first.endswith(".py"):
    return (python, first, *rest)
  return tuple(program)


def check(program: Sequence[str]) -> None:
  """ValueError (one line) when the program cannot be started from here."""
  first = program[0]
  if first in PYTHON_NAMES:
    if len(program) < 2:
      raise ValueError(f"program {first!r} without a script or -m module")
  elif first.endswith(".py"):
    if not os.path.isfile(first):
      raise ValueError(f"program {first!r}: no such file (the tasks start in {os.getcwd()})")
  elif os.sep in first:
    if not (os.path.isfile(first) and os.access(first, os.X_OK)):
      raise ValueError(f"program {first!r}: not an executable file")
  elif shutil.which(first) is None:
    raise ValueError(f"program {first!r}: not found on PATH (a script: give its .py path)")
