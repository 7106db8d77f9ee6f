"""The report builder on recorded run directories, budget planning, and a small compare run."""

import io
import json

import pytest
from absl import flags

from experiments import outcome, runspec, scaling
from experiments import budget, compare, report
from tests import helpers
from trainers import flags as trainer_flags


def _write_run(path, summary, records):
  path.mkdir(parents=True)
  (path / "summary.json").write_text(json.dumps(summary))
  (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.fixture
def recorded(tmp_path):
  base = {"dataset": "mnist", "model": "mlp", "test_loss": 0.1, "train_time_s": 10.0,
          "examples_per_sec": 1000.0, "examples_processed": 10000, "target_accuracy": 0.98}
  _write_run(tmp_path / "ar", {**base, "approach": "allreduce", "label": "allreduce",
                               "num_workers": 2, "test_accuracy": 0.981, "wall_time_s": 20.0,
                               "bytes_sent_per_worker": 2e6, "bytes_received_per_worker": 2e6,
                               "bytes_analytic_per_worker": 1.6e6, "notes": "",
                               "reached_target": True, "time_to_target_s": 16.0,
                               "first_step_since_launch_s": 6.0, "examples_to_target": 10000},
             [{"kind": "first_step", "step": 1, "elapsed_s": 1.0, "since_launch_s": 6.0},
              {"kind": "eval", "step": 5, "elapsed_s": 8.0, "since_launch_s": 9.0,
               "examples_seen": 5000, "test_accuracy": 0.972, "bytes_sent_per_worker": 1e6},
              {"kind": "epoch", "step": 10, "elapsed_s": 15.0, "since_launch_s": 16.0,
               "examples_seen": 10000, "test_accuracy": 0.981, "bytes_sent_per_worker": 2e6}])
  _write_run(tmp_path / "fa", {**base, "approach": "fedavg", "label": "fedavg",
                               "num_workers": 0, "rounds": 2, "bytes_sent_per_worker": None,
                               "notes": "2 rounds x 2 clients", "test_accuracy": 0.95,
                               "wall_time_s": 30.0, "reached_target": False},
             [{"kind": "round", "step": r, "round": r, "elapsed_s": 10.0 * r, "examples": 100,
               "examples_seen": 100 * r, "test_accuracy": 0.9 + 0.05 * (r - 1),
               "client_drift": 1.0 / r, "clients": [{"client": c, "loss": 1.0 / r, "accuracy": 0.5, "examples": 50}
                           for c in (r, r + 1)]} for r in (1, 2)])
  _write_run(tmp_path / "go", {**base, "approach": "gossip", "label": "gossip/ring",
                               "num_workers": 4, "bytes_sent_per_worker": 5e6,
                               "notes": "consensus distance 1.00e-02, degree 2",
                               "test_accuracy": 0.96, "wall_time_s": 25.0}, [])
  return tmp_path


def test_rows_hold_the_figures(recorded):
  rows = report.build_report([str(recorded / d) for d in ("ar", "fa", "go")], str(recorded))
  ar, fa, go = rows
  assert ar["approach"] == "allreduce" and ar["test_accuracy"] == 0.981
  assert ar["reached_target"] is True and ar["time_to_target_s"] == 16.0
  assert ar["startup_s"] == 6.0 and ar["examples_to_target"] == 10000
  assert fa["reached_target"] is False and fa["time_to_target_s"] is None
  assert go["approach"] == "gossip/ring" and go["bytes_sent_per_worker"] == 5e6
  assert go["reached_target"] is None  # the run had no target
  assert "consensus distance 1.00e-02" in go["notes"]
  curve = report.accuracy_curve(report.load_run(str(recorded / "ar")))
  assert [(c["t"], c["bytes"]) for c in curve] == [(9.0, 1e6), (16.0, 2e6)]
  md = (recorded / "report.md").read_text()
  assert "| allreduce | 2 | 98.10% | yes | 16.0 | 6.0 |" in md
  assert "| 2.0 MB | 2.0 MB | 1.6 MB | 1.25x |" in md
  data = json.loads((recorded / "report.json").read_text())
  assert [r["approach"] for r in data["rows"]] == ["allreduce", "fedavg", "gossip/ring"]
  for r in data["rows"]:  # the fields every row carries
    assert set(report.ROW_KEYS) <= set(r)
  for png in ("report.png", "fedavg_clients.png"):
    assert (recorded / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  fed = report.load_run(str(recorded / "fa"))
  assert report.round_series(fed, "client_drift") == ([1, 2], [1.0, 0.5])
  # The paper preset's figure: accuracy and drift per round, a line per run; nothing
  # for runs without rounds.
  assert report.plot_rounds({"fedavg": fed}, str(recorded / "rounds.png"), target=0.99)
  assert (recorded / "rounds.png").read_bytes()[:4] == b"\x89PNG"
  assert not report.plot_rounds({"ar": report.load_run(str(recorded / "ar"))},
                                str(recorded / "none.png"))


def test_seeds_aggregate_to_mean_and_range():
  rows = [{"approach": "a", "reached_target": True, "time_to_target_s": t,
           "test_accuracy": acc, "examples_to_target": 10, "startup_s": 1.0,
           "bytes_sent_per_worker_to_target": None}
          for t, acc in ((10.0, 0.99), (20.0, 0.991))] + [
      {"approach": "a", "reached_target": False, "time_to_target_s": None,
       "test_accuracy": 0.98, "examples_to_target": None, "startup_s": 1.0,
       "bytes_sent_per_worker_to_target": None}]
  (agg,) = report.aggregate(rows)
  assert agg["runs"] == 3 and agg["reached"] == 2
  assert agg["time_to_target_s"] == {"mean": 15.0, "min": 10.0, "max": 20.0}
  assert agg["test_accuracy"]["min"] == 0.98
  assert agg["bytes_sent_per_worker_to_target"] is None
  assert "| a | 2/3 | 15.0 (10.0–20.0) |" in "\n".join(report._aggregate_markdown([agg]))


def test_report_cli_needs_run_dirs(tmp_path, capsys):
  assert report.main(["report", str(tmp_path)]) == 2
  assert "summary.json" in capsys.readouterr().err


@pytest.mark.parametrize("name,expected", [
    ("allreduce", 120_000), ("ps_async", 120_000), ("ps_sync", 120_000), ("gossip", 120_000),
    ("fedavg", 120_000)])
def test_every_approach_gets_the_same_example_budget(name, expected):
  plan = budget.plan_budget(name, 120_000, 60_000, num_workers=2, batch_size=64)
  assert abs(plan.examples - expected) <= 2 * 64 * 2  # rounding to whole steps only
  if name == "fedavg":
    assert "--rounds=20" in plan.trainer_args
  if name == "ps_async":
    assert "--steps_per_epoch=937" in plan.trainer_args and "--epochs=2" in plan.trainer_args
  target = budget.Target(0.99, stop=True, eval_every_examples=15000)
  capped = budget.plan_budget(name, 120_000, 60_000, num_workers=2, batch_size=64,
                              target=target)
  assert capped.trainer_args[:len(plan.trainer_args)] == plan.trainer_args
  assert {"--target_accuracy=0.99", "--stop_at_target"} <= set(capped.trainer_args)
  # FedAvg evaluates every round; the others every quarter epoch.
  assert ("--eval_every_examples=15000" in capped.trainer_args) == (name != "fedavg")
  from trainers import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  trainer_flags.check_trainer_argv(budget.approaches.variant(name).approach.name,
                                   list(capped.trainer_args))


def test_compare_plans_seeds_and_rejects_bad_flags(capsys):
  fv = compare._parse(["compare", "--approaches=allreduce,fedavg", "--seeds=3"])
  runs = compare.plan_runs(fv, 60_000, "/r")
  assert [(r.name, r.seed) for r in runs] == [("allreduce", 42), ("allreduce", 43),
                                              ("allreduce", 44), ("fedavg", 42),
                                              ("fedavg", 43), ("fedavg", 44)]
  assert runs[1].run_dir == "/r/allreduce/seed_43" and "--seed=43" in runs[1].trainer_args
  assert "--stop_at_target" in runs[0].trainer_args
  # The data flags are written once, by the spec: never twice.
  assert sum(a.startswith("--model=") for a in runs[0].argv()) == 1
  # A fixed budget records the target but does not stop at it.
  fixed = compare.plan_runs(compare._parse(["compare", "--budget_examples=60000"]), 60_000,
                            "/r")
  assert all("--stop_at_target" not in r.trainer_args for r in fixed)
  assert fixed[0].run_dir == "/r/allreduce"
  for bad in ("--target_accuracy=1.5", "--seeds=0", "--approaches=nope", "--max_examples=0"):
    assert compare.main(["compare", bad]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


@pytest.mark.multiprocess
def test_compare_two_approaches_on_synthetic_writes_the_report(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approaches=allreduce,gossip", "--dataset=synthetic", "--synthetic_examples=1024",
       "--model=mlp", "--budget_examples=2048", "--batch_size=32", f"--run_dir={tmp_path}",
       "--timeout=200"], timeout_s=400, module="experiments.compare")
  assert code == 0, out[-3000:]
  assert "compare: [1/3] single_process" in out and "compare: [3/3] gossip: ok" in out
  report_json = json.loads((tmp_path / "report.json").read_text())
  rows = report_json["rows"]
  assert [r["approach"] for r in rows] == ["keras_fit", "allreduce", "gossip/ring"]
  assert all(r["examples_processed"] == 2048 for r in rows)
  # Every row beside the single-process row measured in the same run.
  assert rows[0]["examples_per_sec_vs_single"] == 1.0
  for r in rows[1:]:
    assert r["examples_per_sec_vs_single"] == pytest.approx(
        r["examples_per_sec"] / rows[0]["examples_per_sec"])
  assert "oneDNN" in report_json["machine"] and "core(s)" in report_json["machine"]
  # Measured on the wire by the launcher's shim, beside the analytic volume.
  assert all(r["bytes_sent_per_worker"] >= r["bytes_analytic_per_worker"] > 0
             for r in rows[1:])
  assert (tmp_path / "report.png").exists() and (tmp_path / "report.md").exists()


def test_fedavg_paper_preset_plans_the_four_table_2_settings():
  runs = budget.paper_preset(max_rounds=400, client_learning_rate=0.05)
  assert [(name, paper) for name, _, paper in runs] == [
      ("fedavg_iid_E5", 20), ("fedavg_shards_E5", 229), ("fedavg_iid_E1", 34),
      ("fedavg_shards_E1", 350)]
  for _, args, _ in runs:
    assert {"--clients_per_round=10", "--local_batch_size=10", "--client_learning_rate=0.05",
            "--target_accuracy=0.99", "--stop_at_target", "--rounds=400"} <= set(args)
  from trainers import flags as trainer_flags
  for _, args, _ in runs:  # every planned flag is a real FedAvg trainer flag
    trainer_flags.check_trainer_argv("fedavg", args)


def test_fedavg_paper_preset_reports_rounds_beside_the_paper(tmp_path, monkeypatch):
  calls = []

  def fake_launch(argv, console=None, env=None):  # the launcher: records, writes a summary
    calls.append(argv)
    run_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("--run_dir="))
    reached = 25 if "--partition=iid" in argv else None
    _write_run(__import__("pathlib").Path(run_dir), {
        "approach": "fedavg", "rounds_to_target": reached, "rounds_run": reached or 400,
        "test_accuracy": 0.991 if reached else 0.985, "wall_time_s": 100.0,
        "client_learning_rate": 0.1}, [])
    return 0

  monkeypatch.setattr(runspec.local, "main", fake_launch)
  assert compare.main(["compare", "--preset=fedavg_paper", f"--run_dir={tmp_path}"]) == 0
  assert len(calls) == 4 and all("--approach=fedavg" in c for c in calls)
  assert all("--model=fedavg_cnn" in c for c in calls)
  md = (tmp_path / "report.md").read_text()
  assert "| fedavg_iid_E5 | 25 | 20 | 99.10% | 25 | 0.1 | 100 |" in md
  assert "| fedavg_shards_E1 | not in 400 | 350 | 98.50% | 400 | 0.1 | 100 |" in md
  # Run again: the finished settings are reported, not run again.
  assert compare.main(["compare", "--preset=fedavg_paper", f"--run_dir={tmp_path}"]) == 0
  assert len(calls) == 4


def test_fedavg_paper_preset_picks_settings_and_algorithms_and_resumes():
  runs = budget.paper_preset(50, 0.05, ("shards_E1",), ("fedavg", "fedprox", "fedadam",
                                                        "scaffold"))
  assert [name for name, _, _ in runs] == ["fedavg_shards_E1", "fedprox_shards_E1",
                                           "fedadam_shards_E1", "scaffold_shards_E1"]
  assert all("--resume" in args for _, args, _ in runs)
  assert "--proximal_strength=0.1" in runs[1][1] and "--server_optimizer=adam" in runs[2][1]
  for _, args, _ in runs:
    trainer_flags.check_trainer_argv("fedavg", args)
  with pytest.raises(ValueError, match="--paper_settings"):
    budget.paper_preset(50, 0.05, ("iid_E3",))
  with pytest.raises(flags.Error, match="--paper_algorithms"):
    compare._parse(["compare", "--preset=fedavg_paper", "--paper_algorithms=scafold"])


def _fake_launcher(monkeypatch, exit_code: int) -> list:
  """The launcher replaced by one that records its argv and exits with `exit_code`."""
  calls = []

  def launch(argv, console=None, env=None):
    calls.append(argv)
    return exit_code

  monkeypatch.setattr(runspec.local, "main", launch)
  return calls


def test_a_stopped_launch_stops_the_comparison(tmp_path, monkeypatch):
  """Ctrl-C or SIGTERM reaches the launcher running the first approach: compare
  starts no other approach (it used to go on to the next one)."""
  calls = _fake_launcher(monkeypatch, 143)
  out = io.StringIO()
  code = compare.main(["compare", "--approaches=allreduce,gossip", "--dataset=synthetic",
                       "--nosingle_process", f"--run_dir={tmp_path}"], console=out)
  assert code != 0 and len(calls) == 1
  assert "compare: stopped (exit 143); 1 run(s) not started" in out.getvalue()


# --- the regime grid (issue 15) ---

def test_regimes_parse_and_plan_with_the_grid_defaults():
  from experiments import regimes
  assert [r.name for r in regimes.parse(["all"])] == list(regimes.REGIMES)
  assert [r.name for r in regimes.parse(["straggler", "shards"])] == ["straggler", "shards"]
  with pytest.raises(ValueError, match="unknown nope"):
    regimes.parse(["nope"])
  fv = compare._parse(["compare", "--regimes=shards,straggler"])
  assert (fv.num_workers, fv.target_accuracy, fv.max_examples) == (4, 0.98, 60_000)
  fv = compare._parse(["compare", "--regimes=shards", "--num_workers=2",
                       "--target_accuracy=0.9"])
  assert (fv.num_workers, fv.target_accuracy) == (2, 0.9)
  with pytest.raises(flags.Error, match="--regimes"):
    compare._parse(["compare", "--regimes=fast"])


def test_the_skew_regimes_and_a_gossip_topology_reach_the_right_rows():
  from experiments import regimes
  assert regimes.REGIMES["dirichlet"].trainer_args == ("--partition=dirichlet",
                                                        "--dirichlet_alpha=0.1")
  fv = compare._parse(["compare", "--regimes=dirichlet", "--gossip_topology=one_peer_exp",
                       "--approaches=allreduce,gossip,gossip_async", "--dataset=synthetic"])
  runs = {r.name: r for r in compare.plan_runs(fv, 6000, "/r")}
  assert "--topology=one_peer_exp" in runs["gossip"].trainer_args
  assert "--topology=one_peer_exp" in runs["gossip_async"].trainer_args
  assert not any(a.startswith("--topology") for a in runs["allreduce"].trainer_args)
  for run in runs.values():
    trainer_flags.check_trainer_argv(run.approach, list(run.trainer_args))


def test_regime_grid_names_the_winner_and_writes_md_json_png(tmp_path):
  from experiments import regimes
  ok = lambda t, b, reached=True, acc=0.99: regimes.cell(outcome.Outcome({
      "reached_target": reached, "time_to_target_s": t, "test_accuracy": acc,
      "since_launch_s": 100.0, "bytes_sent_per_worker": b, "examples_processed": 1000},
      None))
  cells = {"baseline": {"allreduce": ok(40.0, 2e8), "gossip": ok(30.0, 3e8)},
           "link_10mbit": {"allreduce": ok(None, 1e8, False, 0.95),
                           "gossip": regimes.cell(outcome.Outcome(None, 1))}}
  chosen = regimes.parse(["baseline", "link_10mbit"])
  table = regimes.write(str(tmp_path), cells, ["allreduce", "gossip"], chosen, 0.98, "x")
  assert "| baseline (one fast host, IID shards) | **40 s**, 200 MB/worker | **30 s**, " \
         "300 MB/worker | gossip |" in table
  assert "95.00% at cap (100 s), 100 MB/worker | failed | none |" in table
  assert (tmp_path / "regimes.png").stat().st_size > 1000
  saved = json.loads((tmp_path / "regimes.json").read_text())
  assert saved["cells"]["baseline"]["gossip"]["time_to_target_s"] == 30.0


def test_a_timed_out_regime_run_shows_its_last_evaluation_and_is_not_rerun(tmp_path):
  from experiments import regimes
  run = tmp_path / "ps_sync"
  run.mkdir()
  (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [
      {"kind": "eval", "step": 59, "test_accuracy": 0.9688, "since_launch_s": 400.0,
       "bytes_sent_per_worker": 5e8, "examples_seen": 15104},
      {"kind": "step", "step": 100, "loss": 0.29}]) + "\n")
  (run / outcome.EXIT_FILE).write_text(json.dumps({"exit_code": 124, "seconds": 1201.0}))
  c = regimes.cell_of_run(str(run))
  assert not c["ok"] and c["test_accuracy"] == 0.9688
  assert regimes.cell_text(c) == ("timed out at 1201 s: 96.88% at its last evaluation, "
                                  "500 MB/worker")
  assert outcome.of_run(str(run)).reusable  # --reuse: a timeout would time out again
  assert outcome.of_run(str(run)).reusable_within(1200.0)
  assert not outcome.of_run(str(run)).reusable_within(3600.0)  # given more time: run again
  from experiments import runspec  # pylint: disable=g-import-not-at-top
  assert runspec.RunSpec("r", str(run), "ps", launcher_args=(
      "--timeout=1200", "--timeout=3600")).timeout_s == 3600.0  # what run_all compares
  (run / outcome.EXIT_FILE).write_text(json.dumps({"exit_code": 1, "seconds": 3.0}))
  assert not outcome.of_run(str(run)).reusable  # a failure is run again


def _diverged_run(run) -> None:
  """What a diverged run leaves: a strict summary.json saying so, exit 65."""
  run.mkdir(parents=True)
  (run / "summary.json").write_text(json.dumps({
      "approach": "gossip", "status": "diverged", "error": "non-finite loss at step 7",
      "test_accuracy": None, "reached_target": None, "examples_processed": 448}))
  (run / "metrics.jsonl").write_text(json.dumps(
      {"kind": "eval", "test_accuracy": 0.31, "examples_seen": 256}) + "\n")
  (run / outcome.EXIT_FILE).write_text(json.dumps({"exit_code": 65, "seconds": 9.0}))


def test_a_diverged_run_is_never_done_reused_or_reached(tmp_path, monkeypatch):
  """One rule (experiments/outcome.py) for every driver: a diverged run's summary.json
  does not make it finished (compare --reuse runs it again), its grid cells are not
  ok, and the report shows it as failed, never as reached."""
  from experiments import regimes
  run = tmp_path / "gossip"
  _diverged_run(run)
  ended = outcome.of_run(str(run))
  assert (ended.ok, ended.reached, ended.reusable, ended.status) == (
      False, False, False, "diverged")
  assert "non-finite loss" in ended.error
  cell = regimes.cell_of_run(str(run))
  assert not cell["ok"] and cell["status"] == "diverged"
  assert regimes.cell_text(cell).startswith("diverged")
  assert scaling.cell_of_run(str(run))["ok"] is False
  assert not report.row(report.load_run(str(run)))["reached_target"]
  # compare --reuse launches it again (and would report it as failed again).
  calls = _fake_launcher(monkeypatch, 65)  # diverges again
  out = io.StringIO()
  code = compare.main(["compare", "--approaches=gossip", "--dataset=synthetic", "--reuse",
                       "--nosingle_process", f"--run_dir={tmp_path}"], console=out)
  assert code == 1 and len(calls) == 1, out.getvalue()
  assert "reused" not in out.getvalue() and "diverged" in out.getvalue()


def test_the_single_process_row_has_the_allreduce_rows_global_batch_and_target():
  fv = compare._parse(["compare", "--num_workers=4"])
  (single,) = compare.single_process_runs(fv, 60_000, "/r")
  allreduce = next(r for r in compare.plan_runs(fv, 60_000, "/r") if r.name == "allreduce")
  assert single.run_dir == "/r/single_process" and "--plain_keras" in single.trainer_args
  assert "--num_workers=1" in single.launcher_args
  assert "--batch_size=256" in single.trainer_args  # 64 per worker x 4
  same = lambda spec: [a for a in spec.trainer_args if a.startswith(
      ("--epochs", "--steps_per_epoch", "--target_accuracy", "--stop_at_target",
       "--eval_every_examples", "--model", "--seed"))]
  assert same(single) == same(allreduce)  # the same steps, schedule, target and cadence
  # The main comparison starts with it; the grids (regimes, N) do not have it.
  assert compare.row_names(fv)[0] == "allreduce"


def test_every_row_is_also_a_ratio_to_the_single_process_row():
  rows = [{"approach": "single_process", "time_to_target_s": 40.0, "startup_s": 4.0,
           "examples_per_sec": 2000.0},
          {"approach": "gossip", "time_to_target_s": 30.0, "startup_s": 8.0,
           "examples_per_sec": 3000.0},
          {"approach": "ps_sync", "time_to_target_s": None, "startup_s": 6.0,
           "examples_per_sec": None}]
  got = report.with_ratios(rows, rows[0])
  assert (got[1]["time_to_target_vs_single"], got[1]["startup_vs_single"],
          got[1]["examples_per_sec_vs_single"]) == (0.75, 2.0, 1.5)
  assert got[0]["time_to_target_vs_single"] == 1.0
  assert got[2]["time_to_target_vs_single"] is None and got[2]["startup_vs_single"] == 1.5
  assert report.with_ratios(rows, None)[1]["time_to_target_vs_single"] is None
