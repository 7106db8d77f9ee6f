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
  client = {"approach": "keras fit (1 process)", "exit_code": 0, "examples_per_sec": 500.0,
            "test_accuracy": 0.9, "wall_time_s": 10.0}
  fedavg = {"approach": "fedavg", "n": 2, "exit_code": 0, "examples_per_sec": 100.0,
            "test_accuracy": 0.9, "wall_time_s": 30.0, "steady_round_time_s": 15.0,
            "examples_per_round": 6000.0}
  kernels = dict(client, examples_per_sec=300.0)
  fedavg["round_vs_keras"] = bench._fedavg_round_ratio(fedavg, client)
  fedavg["round_vs_keras_same_kernels"] = bench._fedavg_round_ratio(fedavg, kernels)
  assert fedavg["round_vs_keras"] == 15.0 / (6000 / 500)  # 1.25x the same work
  assert fedavg["round_vs_keras_same_kernels"] == 15.0 / (6000 / 300)  # 0.75x
  text = bench.table([row, failed, fedavg], base, flops_per_example=3_000_000,
                     peaks=(8e10, 5e10), client_baseline=client, kernel_baseline=kernels)
  lines = text.splitlines()
  assert "| keras fit (1 process) | 1 | 1000 | 1.00x | 3.0 | 6% | 5.0 | 0.5 / 3.0 / 0.0 / " \
         "0.1 / 0.4 / 1.0 | - | 95.00% | 10.0 | - |" in lines  # (kernels: not recorded)
  assert "| keras fit (1 process), B=10, SGD | 1 | 500 | 0.50x |" in text
  assert "| allreduce | 2 | 900 | 0.90x | 2.7 | 5% | - | - / - / - / - / - / - | - |" \
         in text
  assert "| keras fit (1 process), B=10, SGD, oneDNN off | 1 | 300 | 0.30x |" in text
  assert ("| fedavg | 2 | 100 | 0.10x | 0.3 | 1% | - | - / - / - / - / - / - | 15.00 (1.25x; "
          "0.75x oneDNN off) |") in text
  assert "| gossip | 2 | failed (exit 69) |" in text
  assert "80 GFLOP/s theoretical, 50 GFLOP/s measured" in text
  assert all(line.count("|") == lines[0].count("|") for line in lines[:7])
  assert lines[0].endswith("| kernels |")


def test_each_row_says_which_kernels_its_training_ran_on(monkeypatch):
  from cluster import approaches
  from experiments import runspec
  asked = []

  def onednn_on(env=None):
    asked.append(env)
    return env.get("TF_ENABLE_ONEDNN_OPTS") != "0"
  monkeypatch.setattr(bench.machine_lib, "onednn_on", onednn_on)
  bench._onednn.cache_clear()
  plain = runspec.RunSpec("keras fit", "/r/a", approaches.ALLREDUCE.name)
  off = runspec.RunSpec("keras fit", "/r/b", approaches.ALLREDUCE.name,
                        env=tuple(bench.SAME_KERNELS_ENV.items()))
  fedavg = runspec.RunSpec("fedavg", "/r/c", approaches.FEDAVG.name)
  flower = runspec.RunSpec("flower_fedavg", "/r/d", approaches.FEDAVG.name,
                           program=("python", "-m", "peers.flower_fedavg"))
  native = fedavg.with_args(trainer_args=("--fedavg_backend=native",))
  scaffold = fedavg.with_args(trainer_args=("--algorithm=scaffold",))  # auto: native
  assert [bench.kernels_of(s) for s in (plain, off, native, flower, plain, fedavg,
                                        scaffold)] == [
      "oneDNN on", "oneDNN off", "TFF services: oneDNN off", "oneDNN on", "oneDNN on",
      "oneDNN on", "TFF services: oneDNN off"]
  assert len(asked) == 2  # once per environment
  bench._onednn.cache_clear()


def test_fedavg_steady_rounds_leave_out_the_compiling_first_round():
  from trainers.federated import fedmath as federated
  history = [{"round_time_s": 50.0, "examples": 6000}, {"round_time_s": 4.0, "examples": 6000},
             {"round_time_s": 6.0, "examples": 5000}, {"round_time_s": 5.0, "examples": 7000}]
  assert federated.steady_rounds(history) == {"steady_round_time_s": 5.0,
                                              "examples_per_round": 6000.0}
  assert federated.steady_rounds(history[:1]) == {}


def test_bad_flags_are_one_line_before_any_run(capsys):
  assert bench.main(["bench", "--approaches=allreduce,nope"]) == 2
  assert capsys.readouterr().err.count("\n") == 1
  assert bench.main(["bench", "--fedavg_backends=native,tff"]) == 2
  assert "--fedavg_backends=native,tff" in capsys.readouterr().err


def test_fedavg_is_one_row_per_backend_and_a_stopped_baseline_stops_the_bench(
    tmp_path, monkeypatch, capsys):
  from experiments import runspec
  calls = []

  def launch(argv, console=None, env=None):
    calls.append(argv)
    return 130  # the user pressed Ctrl-C during the very first run (a baseline)
  monkeypatch.setattr(runspec.local, "main", launch)
  monkeypatch.setattr(bench.compare, "num_train_examples", lambda *a: 60_000)
  assert bench.main(["bench", "--approaches=fedavg", "--models=mlp,cnn",
                     f"--run_dir={tmp_path}"]) == 130
  assert len(calls) == 1 and "bench: stopped (exit 130)" in capsys.readouterr().out
  suite = runspec.RunSpec("fedavg", "/r/fedavg-n2", "fedavg", trainer_args=("--rounds=3",))
  rows = bench._backends(suite, ["native", "mapreduce"])
  assert [(r.name, r.run_dir) for r in rows] == [("fedavg (native)", "/r/fedavg-n2"), (
      "fedavg (mapreduce)", "/r/fedavg-n2-mapreduce")]
  assert rows[1].trainer_args == ("--rounds=3", "--fedavg_backend=mapreduce")
  assert bench._backends(suite, ["mapreduce"])[0].name == "fedavg"


def test_theoretical_peak_from_cpuinfo():
  info = "model name\t: x\nflags\t\t: fpu sse avx2 fma\ncpu MHz\t\t: 2000.000\n"
  peak, how = bench.cpu_peak_flops(info, cores=2)
  assert peak == 2 * 8 * 2 * 2 * 2000e6 and how.startswith("2 cores x 8 fp32 lanes")
  assert bench.cpu_peak_flops(info.replace("avx2", "avx512f avx2"), cores=1)[0] == \
      16 * 2 * 2 * 2000e6
  assert bench.cpu_peak_flops("flags\t: avx2\n", cores=2) == (None, "no clock in /proc/cpuinfo")


# /proc/cpuinfo of the two kinds of machine this project meets (abridged): the figures
# must not depend on which one runs the tests.
EPYC_AVX2 = ("model name\t: AMD EPYC 7B12\nflags\t\t: fpu sse sse2 avx fma avx2 bmi2\n"
             "cpu MHz\t\t: 2250.000\n")
XEON_AVX512 = ("model name\t: Intel(R) Xeon(R) Platinum 8481C CPU @ 2.70GHz\nflags\t\t: "
               "avx avx2 avx512f avx512_vnni avx512_bf16 amx_tile amx_bf16\ncpu MHz\t\t: "
               "2600.000\n")


def test_the_machine_line_names_the_isa_and_the_kernels():
  from experiments import machine
  assert machine.isa(EPYC_AVX2) == ["AVX2"]
  assert machine.isa(XEON_AVX512) == ["AMX", "AVX512-BF16", "AVX512-VNNI", "AVX-512", "AVX2"]
  assert bench.cpu_peak_flops(EPYC_AVX2, cores=2)[0] == 2 * 8 * 2 * 2 * 2250e6
  line = machine.Machine("AMD EPYC 7B12", 2, ("AVX2",), False, matmul_gflops=51.2).line()
  assert line == ("AMD EPYC 7B12, 2 core(s), AVX2; oneDNN off in the trainers, off in "
                  "TFF's services; matmul 51 GFLOP/s")
  assert "oneDNN unknown" in machine.Machine("x", 1, (), None).line()
