"""The cost model's arithmetic against hand-computed cases, its validation against the
regime grid's committed runs, and the planning command's output."""

import json
import math
import os

import pytest

from experiments import costmodel as cm
from experiments import scaling

MB = 1e6


def _c(n, params=250_000, bits=8e6, **kw):
  # 250,000 float32 parameters = 1 MB; 8 Mbit/s = 1 MB/s each way.
  return cm.Cluster(n, params, bits, **kw)


def test_link_time_at_once_or_in_turn():
  assert cm.link_seconds(2 * MB, 3 * MB, MB, cm.AT_ONCE) == 3.0
  assert cm.link_seconds(2 * MB, 3 * MB, MB, cm.IN_TURN) == 5.0


def test_ring_allreduce_moves_2_n_minus_1_over_n_of_the_model_each_way():
  sent, received, messages = cm.unit_traffic("allreduce", _c(4))
  assert sent == received == 2 * 3 / 4 * MB and messages == 6
  # 100 steps of 0.1 s compute: 100 x (0.1 + 1.5 MB / 1 MB/s) + 5 s start-up.
  got = cm.predict("allreduce", _c(4), cm.Work(units=100, step_compute_s=0.1, startup_s=5))
  assert got["seconds"] == pytest.approx(5 + 100 * (0.1 + 1.5))
  assert got["communication_s"] == pytest.approx(150)
  # Latency: 2(N-1) messages in sequence per step.
  lat = cm.predict("allreduce", _c(4, latency_s=0.01), cm.Work(100, 0.1))
  assert lat["seconds"] == pytest.approx(100 * (0.1 + 1.5 + 6 * 0.01))
  assert cm.unit_traffic("allreduce", _c(1))[:2] == (0.0, 0.0)


def test_sync_ps_fans_in_n_gradients_and_out_n_models_in_turn():
  assert cm.unit_traffic("ps_sync", _c(8))[:2] == (8 * MB, 8 * MB)
  assert cm.unit_traffic("ps_sync", _c(8, num_ps=2))[:2] == (4 * MB, 4 * MB)
  got = cm.predict("ps_sync", _c(8), cm.Work(units=10, step_compute_s=0.5))
  assert got["seconds"] == pytest.approx(10 * (0.5 + 16))  # 8 MB in, then 8 MB out


def test_async_ps_runs_at_the_slower_of_the_workers_and_the_ps_link():
  # Fast link: workers bound. Each worker step 1 s compute + 2 x 0.01 MB / 1 MB/s;
  # 4 workers: 4 steps per (1.02 s); 400 worker steps.
  small = _c(4, params=2_500)
  got = cm.predict("ps_async", small, cm.Work(units=400, step_compute_s=1.0))
  assert got["seconds"] == pytest.approx(400 * 1.02 / 4)
  # Thin link: the ps link carries one 1 MB model each way per worker step, at once.
  got = cm.predict("ps_async", _c(4), cm.Work(units=400, step_compute_s=0.01))
  assert got["seconds"] == pytest.approx(400 * 1.0)


def test_gossip_sends_degree_models_and_async_hides_them_behind_compute():
  assert cm.unit_traffic("gossip", _c(8))[:2] == (2 * MB, 2 * MB)
  assert cm.unit_traffic("gossip", _c(2))[:2] == (1 * MB, 1 * MB)  # a ring of 2: one peer
  assert cm.unit_traffic("gossip", _c(64, degree=6))[:2] == (6 * MB, 6 * MB)
  sync = cm.predict("gossip", _c(8), cm.Work(units=50, step_compute_s=0.5))
  assert sync["seconds"] == pytest.approx(50 * (0.5 + 2))
  fast = cm.predict("gossip_async", _c(8), cm.Work(units=50, step_compute_s=3.0))
  slow = cm.predict("gossip_async", _c(8), cm.Work(units=50, step_compute_s=0.5))
  assert fast["seconds"] == pytest.approx(50 * 3.0)   # compute bound: puts hidden
  assert slow["seconds"] == pytest.approx(50 * 2.0)   # link bound


def test_fedavg_rounds_broadcast_and_upload_on_the_chief_and_clients_in_parallel():
  assert cm.unit_traffic("fedavg", _c(4))[:2] == (4 * MB, 4 * MB)
  # 16 services, 10 clients a round: at most 10 services take part.
  assert cm.unit_traffic("fedavg", _c(16))[:2] == (10 * MB, 10 * MB)
  # 10 clients of 600 examples over 4 services: 3 clients on the busiest service,
  # 1 ms an example: 1.8 s; the chief's link 4 MB out then 4 MB in: 8 s.
  got = cm.predict("fedavg", _c(4), cm.Work(units=20, step_compute_s=0.0,
                                            client_example_s=1e-3, startup_s=10))
  assert got["seconds"] == pytest.approx(10 + 20 * (1.8 + 8))
  # 10 services or more: one client each.
  many = cm.predict("fedavg", _c(16, params=25), cm.Work(1, 0.0, client_example_s=1e-3))
  assert many["compute_s"] == pytest.approx(0.6)


def test_a_capped_cell_is_the_uncapped_run_plus_its_busiest_links_time():
  base = {"steps_to_target": 100, "time_to_target_s": 20.0,
          "bytes_by_task": {"worker:0": {"sent": 50 * MB, "received": 40 * MB},
                            "ps:0": {"sent": 200 * MB, "received": 100 * MB}}}
  # 8 Mbit/s = 1 MB/s: in turn, the ps's 300 MB take 300 s.
  assert cm.predict_capped(base, "ps_sync", 8e6) == pytest.approx(320.0)
  assert cm.predict_capped(base, "allreduce", 8e6) == pytest.approx(220.0)  # at once
  assert cm.parse_rate("10mbit") == 1e7 and cm.parse_rate("1gbit") == 1e9
  with pytest.raises(ValueError):
    cm.parse_rate("fast")


def test_the_grids_capped_cells_are_predicted_within_30_percent_mostly():
  with open(os.path.join(cm.DOCS, "grid_runs.json")) as f:
    rows = cm.validate(json.load(f)["runs"])
  assert len(rows) >= 10
  within = [r for r in rows if abs(r["error"]) <= 0.3]
  assert len(within) >= 0.8 * len(rows), cm.validation_markdown(rows)


def test_power_law_fit_and_the_sweeps_trend():
  a, b = scaling.power_law([(2, 100), (4, 200), (8, 400)])
  assert a == pytest.approx(50) and b == pytest.approx(1.0)
  assert scaling.power_law([(4, 7)]) == (pytest.approx(7), 0.0)
  sweep = {"approaches": ["allreduce", "fedavg"], "counts": [2, 4],
           "compute": {"batch_size": 64, "step_s": 0.02, "client_example_s": 1e-3},
           "cells": {"2": {"allreduce": {"ok": True, "reached": True,
                                         "examples_to_target": 32_000, "startup_s": 10},
                           "fedavg": {"ok": True, "reached": True, "examples_to_target":
                                      60_000, "steps_to_target": 10, "startup_s": 20}},
                     "4": {"allreduce": {"ok": True, "reached": True,
                                         "examples_to_target": 64_000, "startup_s": 12},
                           "fedavg": {"ok": True, "reached": True, "examples_to_target":
                                      60_000, "steps_to_target": 12, "startup_s": 20}}}}
  cal = cm.calibrate(sweep, "m", 1000, 1e6)
  assert cal.examples_fit["allreduce"][1] == pytest.approx(1.0)
  assert cal.rounds == 11 and cal.startup_s["allreduce"] == 10
  w = cm.work_for("allreduce", cal, 8)
  assert w.units == pytest.approx(128_000 / (64 * 8)) and w.step_compute_s == 0.02
  assert cm.work_for("fedavg", cal, 64, flops_scale=2.0).client_example_s == 2e-3
  rows = cm.plan_table(cal, {"m": (1000, 1e6)}, [8, 64], [1e9], ["allreduce", "fedavg"],
                       latency_s=0.0)
  assert len(rows) == 2 and all(r["first"] in ("allreduce", "fedavg") for r in rows)
  assert all(r["margin"] >= 1 for r in rows)


def test_the_planning_command_writes_its_table_and_heatmaps(tmp_path):
  if not os.path.exists(os.path.join(cm.DOCS, "scaling.json")):
    pytest.fail("docs/scaling.json (the committed sweep) is missing")
  code = cm.main(["costmodel", "--predict", "--validate", f"--out={tmp_path}",
                  "--models=mlp,small_cnn", "--params=1e8"])
  assert code == 0
  text = (tmp_path / "plan.md").read_text()
  assert "| small_cnn | 512 | 100 Gbit/s |" in text and "1e+08 params" in text
  assert {p.name for p in tmp_path.glob("plan_*.png")} == {
      "plan_mlp.png", "plan_small_cnn.png", "plan_1e+08 params.png"}


def test_the_planning_command_refuses_bad_input_in_one_line(tmp_path, capsys):
  assert cm.main(["costmodel", "--predict", "--links=fast"]) == 2
  assert cm.main(["costmodel"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and all(": error: " in l for l in err)


def test_unit_traffic_takes_its_bytes_from_volume_and_counts_every_message():
  """The cost model's bytes are volume.py's formulas (no constant of its own), and an
  algorithm that sends two model-sized messages each way (SCAFFOLD) costs twice."""
  from trainers.common import volume
  c = cm.Cluster(n=4, num_params=1000, link_bits_per_s=1e9)
  sent, _, _ = cm.unit_traffic(cm.ALLREDUCE, c)
  assert sent == volume.ring_allreduce(1000, 4, 1) == 2 * 3 / 4 * 4000
  two = cm.Cluster(n=4, num_params=1000, link_bits_per_s=1e9, messages=2)
  for name in cm.PATTERNS:
    assert cm.unit_traffic(name, two)[0] == 2 * cm.unit_traffic(name, c)[0]
  assert cm.unit_traffic(cm.FEDAVG, c)[0] == 4 * volume.fedavg_service(1000, 1)


def test_the_patterns_and_units_come_from_the_variant_records():
  from cluster import approaches
  for v in approaches.VARIANTS.values():
    assert cm.PATTERNS[v.name] == v.link_pattern and cm.UNITS[v.name] == v.unit
  assert cm.PS_SYNC == approaches.PS_SYNC_V.name
