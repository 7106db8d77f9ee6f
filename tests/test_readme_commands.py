"""The README's launcher commands run as written from a fresh shell (no TFDS_DATA_DIR,
no activated environment), as a dry run: each is parsed, checked and planned."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from tests import helpers

README = os.path.join(helpers.REPO, "README.md")
LAUNCHERS = (".venv/bin/python -m launch.local", ".venv/bin/tfdist-launch")


def readme_launch_commands() -> list[str]:
  text = open(README).read()
  commands = []
  for block in re.findall(r"```sh\n(.*?)```", text, re.S):
    for line in block.replace("\\\n", " ").splitlines():
      line = line.split("  #")[0].strip()
      if line.startswith(LAUNCHERS):
        commands.append(line)
  return commands


@pytest.mark.parametrize("command", readme_launch_commands())
def test_readme_command_plans_in_a_fresh_shell(command, tmp_path):
  argv = shlex.split(command)
  launcher_end = 3 if argv[1] == "-m" else 1
  argv = ([sys.executable, "-m", "launch.local"] + ["--dry_run"] + argv[launcher_end:])
  env = {k: v for k, v in os.environ.items()
         if k not in ("TFDS_DATA_DIR", "PYTHONPATH", "VIRTUAL_ENV")}
  proc = subprocess.run(argv, cwd=helpers.REPO, env=env, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, (command, proc.stderr[-2000:])
  assert "TF_CONFIG=" in proc.stdout or "run on each host" in proc.stdout


def test_the_readme_has_launch_commands():
  assert len(readme_launch_commands()) >= 8
