"""Issue 35's study: its planning (pure), its table and its resumable grid (fake launcher)."""

import io
import json
import pathlib

import pytest
from absl import flags

from experiments import compare, noniid, runspec
from trainers import flags as trainer_flags


def test_every_algorithm_and_partition_plans_valid_fedavg_flags_at_e5():
  data = runspec.Data("fedavg_2nn")
  for at in ("shards", "dirichlet", "iid@43"):
    specs = noniid.plan("/r", at, list(noniid.ALGORITHMS), data, 2, 80, 0.97, 0.1, 600, 42)
    assert [s.name for s in specs] == list(noniid.ALGORITHMS)
    for s in specs:
      trainer_flags.check_trainer_argv("fedavg", list(s.trainer_args))
      assert "--local_epochs=5" in s.trainer_args and "--resume" in s.trainer_args
      assert s.run_dir == f"/r/{at}/{s.name}"
      assert f"--seed={43 if '@' in at else 42}" in s.trainer_args
  dirichlet = noniid.plan("/r", "dirichlet", ["fedprox_mu0.01"], data, 2, 80, 0.97, 0.1,
                          600, 42)[0].trainer_args
  assert "--dirichlet_alpha=0.1" in dirichlet and "--proximal_strength=0.01" in dirichlet
  assert {"fedadam_lr0.001", "fedadam_lr0.1", "fedyogi_lr0.01", "fedprox_mu1"} <= set(
      noniid.ALGORITHMS)


def test_unknown_names_are_one_line_errors():
  with pytest.raises(flags.Error, match="--noniid_algorithms: unknown fedprox"):
    compare._parse(["compare", "--preset=noniid", "--noniid_algorithms=fedavg,fedprox"])
  with pytest.raises(flags.Error, match="--noniid_partitions: unknown pathological"):
    compare._parse(["compare", "--preset=noniid", "--noniid_partitions=pathological"])
  fv = compare._parse(["compare", "--preset=noniid"])
  assert (fv.model, fv.target_accuracy) == ("fedavg_2nn", 0.97)


def test_rounds_to_a_mark_and_the_seed_summary():
  assert noniid.rounds_to([0.5, 0.96, 0.97, 0.98], 0.97) == 3
  assert noniid.rounds_to([0.5, 0.96], 0.97) is None
  one = {"rounds_to_target": 12, "best": 0.975, "rounds_run": 12, "status": "ok"}
  other = {"rounds_to_target": 18, "best": 0.972, "rounds_run": 18, "status": "ok"}
  missed = {"rounds_to_target": None, "best": 0.961, "rounds_run": 80, "status": "ok"}
  assert noniid.summary_text([one], "rounds_to_target") == "12"
  assert noniid.summary_text([one, other], "rounds_to_target") == "15 (12-18)"
  assert noniid.summary_text([missed], "rounds_to_target") == "not in 80 (best 96.1 %)"
  diverged = dict(missed, status="diverged", rounds_run=19, best=0.958)
  assert noniid.summary_text([diverged], "rounds_to_target") == (
      "diverged after 19 (best 95.8 %)")
  assert noniid.summary_text([one, missed], "rounds_to_target") == (
      "12 in 1/2 seeds (else best 96.1 % in 80)")


def _fake_launcher(monkeypatch, calls, accuracy_of):
  """The launcher replaced by one that writes a FedAvg run with test accuracy per round."""

  def launch(argv, console=None, env=None):
    calls.append(argv)
    run_dir = pathlib.Path(next(a.split("=", 1)[1] for a in argv if a.startswith("--run_dir=")))
    run_dir.mkdir(parents=True)
    accuracy = accuracy_of(argv)
    (run_dir / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "round", "round": r, "test_accuracy": a}) + "\n"
        for r, a in enumerate(accuracy, 1)))
    (run_dir / "summary.json").write_text(json.dumps(
        {"approach": "fedavg", "test_accuracy": accuracy[-1], "wall_time_s": 10.0}))
    return 0

  monkeypatch.setattr(runspec.local, "main", launch)


def test_the_study_writes_its_tables_and_reuses_finished_runs(tmp_path, monkeypatch):
  calls = []
  _fake_launcher(monkeypatch, calls, lambda argv: [0.9, 0.96, 0.975] if "--partition=iid"
                 in argv or "--algorithm=scaffold" in argv else [0.85, 0.93, 0.95])
  argv = ["compare", "--preset=noniid", "--noniid_partitions=shards,iid",
          "--noniid_algorithms=fedavg,scaffold", "--noniid_max_rounds=3",
          "--dataset=synthetic", f"--run_dir={tmp_path}", "--seeds=2"]
  out = io.StringIO()
  assert compare.main(argv, console=out) == 0
  assert len(calls) == 8 and all("--local_epochs=5" in c for c in calls)
  md = (tmp_path / "noniid.md").read_text()
  assert "| fedavg | not in 3 (best 95.0 %) | 3 (3-3) |" in md
  assert "| scaffold | 3 (3-3) | 3 (3-3) |" in md
  assert "--preset=noniid --noniid_partitions=shards,iid" in md
  cells = json.loads((tmp_path / "noniid.json").read_text())["cells"]
  assert set(cells) == {"shards", "iid", "shards@43", "iid@43"}
  assert cells["shards"]["fedavg"]["rounds_to_95"] == 3
  assert (tmp_path / "noniid.png").exists()
  # Run again: every finished run is reported, none launched.
  assert compare.main(argv, console=io.StringIO()) == 0
  assert len(calls) == 8
  # A report over more algorithms than ran: the missing ones are left out, none launched.
  assert compare.main(argv[:3] + ["--noniid_algorithms=fedavg,scaffold,fedprox_mu1",
                                  "--noniid_report"] + argv[4:], console=io.StringIO()) == 0
  assert len(calls) == 8
  assert "| fedavg | not in 3 (best 95.0 %) | 3 (3-3) |" in (tmp_path / "noniid.md").read_text()
  assert "| fedprox_mu1 |" not in (tmp_path / "noniid.md").read_text()
