"""The launcher runs a user's program (not the suite's trainers) once per task with
that task's TF_CONFIG, supervised like a trainer: every task sees a correct and
distinct TF_CONFIG, a tutorial MultiWorkerMirroredStrategy script trains to the end,
and nothing survives success, a failing task or Ctrl-C."""

import json
import os
import signal
import time

import pytest

from launch import program as program_lib
from launch import local
from tests import helpers

PROGRAMS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "user_programs")
SHOW = os.path.join(PROGRAMS, "show_tf_config.py")


def _configs(run_dir) -> dict:
  return {p.name[len("tf_config."):-len(".json")]: json.loads(p.read_text())
          for p in run_dir.glob("tf_config.*.json")}


@pytest.mark.multiprocess
@pytest.mark.parametrize("launcher_args, roles", [
    (["--num_workers=2"], {"worker": 2}),
    (["--approach=ps", "--num_workers=2", "--num_ps=1"], {"chief": 1, "worker": 2, "ps": 1}),
])
def test_every_task_sees_its_own_tf_config(tmp_path, launcher_args, roles):
  code, out, _ = helpers.run_launcher(
      [*launcher_args, f"--run_dir={tmp_path}", "--timeout=60", SHOW, "--flag_for_it=1"],
      timeout_s=90)
  assert code == 0, out[-2000:]
  configs = _configs(tmp_path)
  names = {f"{r}_{i}" for r, n in roles.items() for i in range(n)}
  assert set(configs) == names
  cluster = configs[sorted(names)[0]]["cluster"]
  assert {r: len(a) for r, a in cluster.items()} == roles
  addresses = [a for a in cluster.values() for a in a]
  assert len(set(addresses)) == len(addresses)  # distinct ports
  for name, config in configs.items():
    assert config["cluster"] == cluster  # one cluster, every task its own place in it
    assert f"{config['task']['type']}_{config['task']['index']}" == name
  assert "[worker:1] task worker:1" in out  # prefixed output
  assert (tmp_path / "logs" / "worker_0.log").exists()


@pytest.mark.multiprocess
def test_a_tutorial_multi_worker_keras_script_trains_unmodified(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=200", "--", "python",
       os.path.join(PROGRAMS, "keras_multi_worker.py")], timeout_s=240)
  assert code == 0, out[-3000:]
  assert out.count("trained to the end") == 2


@pytest.mark.multiprocess
def test_a_failing_task_stops_the_job_with_its_code(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=60", SHOW,
       "--exit_code_for=worker:1:3", "--sleep=30"], timeout_s=90)
  assert code == 3, out[-2000:]
  assert "task worker:1 failed with exit code 3" in out


@pytest.mark.multiprocess
def test_ctrl_c_stops_every_task_of_a_program(tmp_path):
  launch = helpers.Launch(["--num_workers=2", f"--run_dir={tmp_path}", "--timeout=120", SHOW,
                           "--sleep=100"], timeout_s=90)
  try:
    deadline = time.monotonic() + 60
    while len(_configs(tmp_path)) < 2 and time.monotonic() < deadline:
      time.sleep(0.2)
    assert len(_configs(tmp_path)) == 2, launch.output[-2000:]
    launch.proc.send_signal(signal.SIGINT)
    code, out, _ = launch.wait()
  finally:
    helpers.assert_no_survivors(launch.tag)
  assert code == 128 + signal.SIGINT, out[-2000:]


@pytest.mark.parametrize("argv, launcher, program, trainer", [
    (["l", "--num_workers=2", "train.py", "--epochs=1"], ["l", "--num_workers=2"],
     ["train.py", "--epochs=1"], None),
    (["l", "--num_workers", "2", "train.py"], ["l", "--num_workers", "2"], ["train.py"], None),
    (["l", "--dry_run", "train.py"], ["l", "--dry_run"], ["train.py"], None),
    (["l", "--num_workers=2", "--", "python", "-m", "pkg"], ["l", "--num_workers=2"],
     ["python", "-m", "pkg"], None),
    (["l", "--num_workers=2", "--", "--model=mlp"], ["l", "--num_workers=2"], [],
     ["--model=mlp"]),
    (["l", "--num_workers=2"], ["l", "--num_workers=2"], [], None),
])
def test_argv_splits_into_launcher_flags_program_and_trainer_flags(argv, launcher, program,
                                                                   trainer):
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  local.define_flags(fv)
  assert program_lib.split_argv(argv, fv) == (launcher, program, trainer)


def test_program_commands_and_refusals(tmp_path):
  assert program_lib.program_argv(["train.py", "--x"], "/py") == ("/py", "train.py", "--x")
  assert program_lib.program_argv(["python3", "-m", "m"], "/py") == ("/py", "-m", "m")
  assert program_lib.program_argv(["echo", "hi"], "/py") == ("echo", "hi")
  with pytest.raises(ValueError, match="no such file"):
    program_lib.check([str(tmp_path / "missing.py")])
  with pytest.raises(ValueError, match="not found on PATH"):
    program_lib.check(["no-such-command-here"])
  assert local.main(["l", "--num_workers=2", str(tmp_path / "missing.py")]) == 2
  assert local.main(["l", "--fail_task=worker:0", "--fail_at_step=1", SHOW]) == 2
  assert not list(tmp_path.iterdir())
