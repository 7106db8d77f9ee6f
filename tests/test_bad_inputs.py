"""Bad input, entry by entry: one line on stderr naming the flag and what is valid,
exit 2, and nothing started or created (the commands run in an empty directory,
which must stay empty)."""

import subprocess
import sys

import pytest

from tests import helpers

L = ["-m", "launch.local"]
CASES = [
    # (argv after python, a fragment of the one line)
    (L + ["--num_workers=100000"], "more than 4 per core"),
    (L + ["--num_workers="], "--num_workers"),
    (L + ["--approach=allreduce", "--num_ps=3"], "--num_ps=3 applies to --approach=ps only"),
    (L + ["--", "--resume"], "--resume does not apply to allreduce"),
    (L + ["--startup_timeout=-1"], "--startup_timeout must be > 0"),
    (L + ["--approach=allreduce", "--", "--ps_mode=sync"],
     "--ps_mode is a flag of --approach=ps, not of allreduce"),
    (L + ["--model=mlp"], "--model is a trainer flag: give it after `--`"),
    (L + ["--run_dir=a_file"], "--run_dir=a_file is a file"),
    (L + ["--num_workers=2", "missing_script.py"], "no such file"),
    (["-m", "experiments.compare", "--num_workers=0"], "--num_workers must be >= 1"),
    (["-m", "experiments.compare", "--batch_size=0"], "--batch_size must be >= 1"),
    (["-m", "experiments.compare", "--model=resnet"], "--model=resnet is not one of"),
    (["-m", "experiments.bench", "--num_workers=abc"], "--num_workers=abc: not a list"),
    (["-m", "trainers.allreduce", "--run_dir=a_file"], "--run_dir=a_file is a file"),
    (["-m", "trainers.ps"], "approach ps needs a TF_CONFIG with chief, worker and ps"),
]


@pytest.mark.parametrize("argv, fragment", CASES, ids=[" ".join(c[0][1:]) for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_created(tmp_path, argv, fragment):
  (tmp_path / "a_file").write_text("not a directory")
  env = helpers.base_env("bad-input")
  env.pop("TF_CONFIG", None)
  proc = subprocess.run([sys.executable, *argv], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=120)
  lines = [l for l in proc.stderr.splitlines() if l.strip()]
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
  assert len(lines) == 1 and fragment in lines[0], proc.stderr[-2000:]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing created


def test_a_trainer_without_its_data_leaves_no_run_directory(tmp_path):
  env = helpers.base_env("bad-input")
  env.update(TFDS_DATA_DIR=str(tmp_path / "empty"))
  proc = subprocess.run([sys.executable, "-m", "trainers.allreduce", "--dataset=mnist",
                         f"--run_dir={tmp_path / 'run'}"], env=env, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 66 and "not prepared" in proc.stderr
  assert not (tmp_path / "run").exists()
