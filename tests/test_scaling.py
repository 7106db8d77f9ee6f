"""The scaling sweep's pure parts: counts, cells, the table; and compare's refusals."""

import pytest

from experiments import compare, outcome, scaling


def test_counts_parse_and_refuse():
  assert scaling.parse_counts(["2", "4", "8"]) == [2, 4, 8]
  for bad in (["two"], ["0"], []):
    with pytest.raises(ValueError):
      scaling.parse_counts(bad)


def test_a_cell_names_the_busiest_task_and_the_steps_to_target():
  s = {"status": "ok", "reached_target": True, "time_to_target_s": 30.0,
       "first_step_since_launch_s": 9.0, "examples_to_target": 30720, "steps_to_target": 120,
       "steps": 200, "bytes_sent_per_worker": 5e6, "bytes_busiest_task": 4e7,
       "bytes_by_task": {"worker:0": {"sent": 5e6, "received": 5e6},
                         "ps:0": {"sent": 2e7, "received": 2e7}}}
  c = scaling.cell(outcome.Outcome(s, None))
  assert c["busiest_task"] == "ps:0" and c["steps_to_target"] == 120 and c["reached"]
  missed = scaling.cell(outcome.Outcome({**s, "reached_target": False,
                                         "steps_to_target": None}, 0))
  assert missed["steps_to_target"] == 200 and not missed["reached"]
  assert scaling.cell(outcome.Outcome(None, None))["ok"] is False
  assert scaling.cell(outcome.Outcome({**s, "status": "diverged"}, 65))["ok"] is False
  table = scaling.markdown({"2": {"ps_sync": c}, "4": {}}, ["ps_sync"], [2, 4],
                           {"step_s": 0.02, "batch_size": 64, "client_example_s": 4e-4,
                            "client_batch_size": 10}, 0.98)
  assert "| ps_sync | 2 | yes | 30720 | 120 | 5.0 | ps:0 | 40.0 | 30 |" in table
  assert "| ps_sync | 4 | failed |" in table
  assert "20.0 ms per step at batch 64" in table


def test_compare_refuses_a_bad_sweep_in_one_line(capsys):
  assert compare.main(["compare", "--scaling=2,x"]) == 2
  assert compare.main(["compare", "--scaling=2,4", "--regimes=baseline"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 2 and all(l.startswith("experiments.compare: error: --scaling")
                               for l in err), err
