"""The bench table's columns (pure formatting; no timing asserted)."""

from experiments import bench


def test_table_shows_ratio_flops_and_the_start_up_breakdown():
  base = {"approach": "keras fit (1 process)", "exit_code": 0, "examples_per_sec": 1000.0,
          "test_accuracy": 0.95, "wall_time_s": 10.0, "first_step_latency_s": 5.0,
          "startup_s": {"launcher": 0.5, "import": 3.0, "peers": 0.0, "cluster": 0.1,
                        "data": 0.4, "first_step": 1.0}}
  row = {"approach": "allreduce", "n": 2, "exit_code": 0, "examples_per_sec": 900.0,
         "test_accuracy": 0.95, "wall_time_s": 12.0, "first_step_latency_s": None}
  failed = {"approach": "gossip", "n": 2, "exit_code": 69}
  text = bench.table([row, failed], base, flops_per_example=3_000_000, peaks=(8e10, 5e10))
  lines = text.splitlines()
  assert "| keras fit (1 process) | 1 | 1000 | 1.00x | 3.0 | 5.0 | 0.5 / 3.0 / 0.0 / 0.1 / " \
         "0.4 / 1.0 | - | 95.00% | 10.0 |" in lines
  assert "| allreduce | 2 | 900 | 0.90x | 2.7 | - | - / - / - / - / - / - | - |" \
         in text
  assert "| gossip | 2 | failed (exit 69) |" in text
  assert "80 GFLOP/s theoretical, 50 GFLOP/s measured" in text
  assert all(line.count("|") == lines[0].count("|") for line in lines[:5])


def test_theoretical_peak_reads_this_machine():
  peak, how = bench.cpu_peak_flops()
  assert peak is None or (peak > 0 and "cores" in how)
