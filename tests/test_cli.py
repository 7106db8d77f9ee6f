"""Every entry point answers --help / -h / --helpfull with its flags (rc 0), and every
console script answers --version and names itself in its error lines."""

import os
import subprocess
import sys

import pytest

from cluster import cli
from tests import helpers

# entry module -> a flag its help must list
ENTRIES = {"launch.local": "num_workers", "launch.k8s": "image",
           "experiments.compare": "target_accuracy", "experiments.bench": "budget_examples",
           "experiments.report": "out_dir", "experiments.exit_paths": "run_dir",
           "experiments.data": "idx_dir", "experiments.costmodel": "latency_us",
           "trainers.allreduce": "steps_per_execution", "trainers.ps": "ps_mode",
           "trainers.gossip": "topology", "trainers.federated": "clients_per_round"}
SCRIPTS = ("tfdist-launch", "tfdist-k8s", "tfdist-compare", "tfdist-bench", "tfdist-report",
           "tfdist-data", "tfdist-plan",
           "tfdist-allreduce", "tfdist-ps", "tfdist-gossip", "tfdist-fedavg")


def _run(argv: list[str]) -> subprocess.CompletedProcess:
  return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=helpers.REPO,
                        env=helpers.base_env("cli"))


@pytest.mark.parametrize("module", sorted(ENTRIES))
@pytest.mark.parametrize("flag", ["--help", "-h", "--helpfull"])
def test_every_entry_point_lists_its_flags(module, flag):
  proc = _run([sys.executable, "-m", module, flag])
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.startswith("usage: ") and f"--{ENTRIES[module]}" in proc.stdout
  assert "--version" in proc.stdout and not proc.stderr.strip().startswith("error")


def test_a_programs_own_help_goes_to_the_program(tmp_path):
  """After the program's name, --help is the program's: the launcher starts it."""
  proc = _run([sys.executable, "-m", "launch.local", "--num_workers=1", "--dry_run",
               f"--run_dir={tmp_path}", "tests/user_programs/show_tf_config.py", "--help"])
  assert proc.returncode == 0 and "usage:" not in proc.stdout
  assert "show_tf_config.py --help" in proc.stdout  # the plan shows the program's argv


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_console_script_prints_the_version(script):
  path = os.path.join(os.path.dirname(sys.executable), script)
  # make venv installs the package with its console scripts: missing is a failure.
  assert os.path.exists(path), f"{script} not installed (make venv installs the package)"
  proc = _run([path, "--version"])
  assert proc.returncode == 0 and proc.stdout.strip() == f"{script} {cli.version()}"


def test_a_console_script_names_itself_in_errors():
  path = os.path.join(os.path.dirname(sys.executable), "tfdist-launch")
  assert os.path.exists(path), "tfdist-launch not installed (make venv installs the package)"
  proc = _run([path, "--num_workers=0"])
  assert proc.returncode == 2 and proc.stderr.startswith("tfdist-launch: error: ")


def test_tf_start_up_noise_is_kept_off_the_console_and_real_errors_are_not():
  noise = [
      "2026-12-02 17:10:31.037375: E tensorflow/core/distributed_runtime/master.cc:323] "
      "CreateSession failed because worker /job:worker/replica:0/task:0 returned error: "
      "UNAVAILABLE: Connection reset by peer",
      "Additional GRPC error information from remote target /job:worker/replica:0/task:0 "
      "while calling /tensorflow.WorkerService/GetStatus:",
      ':{"created":"@1796231431.03","description":"Error received from peer ipv4:127.0.0.1:1",'
      '"grpc_message":"Connection reset by peer","grpc_status":14}',
      "2026-12-02 17:10:30.9: I tensorflow/core/distributed_runtime/master.cc:240] Scanning"]
  assert all(cli.is_tf_noise(line) for line in noise)
  real = ["error: diverged: loss is nan at step 40; lower --learning_rate or check the data",
          "2026-12-02 17:10:31.0: E tensorflow/core/common_runtime/executor.cc] OOM",
          "Additional GRPC error information from remote target /job:worker/replica:0/task:1 "
          "while calling /tensorflow.CoordinationService/Heartbeat:"]
  assert not any(cli.is_tf_noise(line) for line in real)
