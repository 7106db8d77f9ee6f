"""Pure launcher planning: roles, TF_CONFIG, ports, GPUs, logs; and the CLI's usage errors."""

import io
import itertools
import json

import pytest

from launch import local, plan
from launch.config import LaunchConfig, Machine


def _ports(start=20000):
  counter = itertools.count(start)
  return lambda: next(counter)


def _plan(approach="allreduce", n=2, attempt=0, netns=None, num_gpus=0, preload=(), **kw):
  """make_plan of a LaunchConfig (`kw` its fields) on a machine with `num_gpus`."""
  config = LaunchConfig(approach=approach, num_workers=n, run_dir="/runs/x", run_id="rid",
                        **{"trainer_argv": ("--epochs=1",), **kw})
  return plan.make_plan(config, _ports(), Machine(num_gpus=num_gpus, preload=preload),
                        attempt, netns=netns)


def test_allreduce_plan_has_one_worker_task_per_worker_with_its_own_tf_config():
  p = _plan(n=3)
  assert [t.name for t in p.tasks] == ["worker:0", "worker:1", "worker:2"]
  assert p.cluster == {"worker": ("localhost:20000", "localhost:20001", "localhost:20002")}
  for i, t in enumerate(p.tasks):
    cfg = json.loads(t.tf_config)
    assert cfg == {"cluster": {"worker": list(p.cluster["worker"])},
                   "task": {"type": "worker", "index": i}}
    assert t.env["TF_CONFIG"] == t.tf_config
    assert t.env["TFDIST_RUN_ID"] == "rid"
    assert t.primary
    assert t.log_path == f"/runs/x/logs/worker_{i}.log"
    assert t.argv[1:] == ("-m", "trainers.allreduce", "--run_dir=/runs/x", "--epochs=1")


def test_ps_plan_has_chief_workers_and_ps_and_waits_only_for_the_chief():
  p = _plan("ps", 2, num_ps=2)
  assert [t.name for t in p.tasks] == ["chief:0", "worker:0", "worker:1", "ps:0", "ps:1"]
  assert [t.primary for t in p.tasks] == [True, False, False, False, False]
  assert len({t.address for t in p.tasks}) == 5


def test_fedavg_with_zero_workers_is_a_single_chief():
  p = _plan("fedavg", 0)
  assert [t.name for t in p.tasks] == ["chief:0"]


@pytest.mark.parametrize("approach,n,kw,match", [
    ("allreduce", 0, {}, "--num_workers"),
    ("ps", 2, {"num_ps": 0}, "--num_ps"),
    ("nope", 2, {}, "--approach"),
])
def test_invalid_plans_name_the_flag(approach, n, kw, match):
  with pytest.raises(ValueError, match=match):
    _plan(approach, n, **kw)


def test_gpus_round_robin_one_per_worker():
  names = [f"worker:{i}" for i in range(5)]
  assert plan.assign_gpus(names, 4, 1) == {
      "worker:0": "0", "worker:1": "1", "worker:2": "2", "worker:3": "3", "worker:4": "0"}
  assert plan.assign_gpus(names[:2], 4, 2) == {"worker:0": "0,1", "worker:1": "2,3"}


def test_no_gpus_means_empty_cuda_visible_devices_everywhere():
  p = _plan(n=2, num_gpus=0)
  assert [t.env["CUDA_VISIBLE_DEVICES"] for t in p.tasks] == ["", ""]
  with pytest.raises(ValueError, match="gpus_per_worker"):
    plan.assign_gpus(["worker:0"], 1, 2)


def test_ps_tasks_get_no_gpu():
  p = _plan("ps", 2, num_ps=1, num_gpus=2)
  gpus = {t.name: t.env["CUDA_VISIBLE_DEVICES"] for t in p.tasks}
  assert gpus == {"chief:0": "0", "worker:0": "1", "worker:1": "0", "ps:0": ""}


def test_planning_does_not_touch_the_parent_environment(monkeypatch):
  import os
  before = dict(os.environ)
  _plan(n=2)
  assert dict(os.environ) == before


def test_dry_run_prints_every_tf_config_and_starts_nothing(tmp_path):
  out = io.StringIO()
  code = local.main(["launch", "--num_workers=2", f"--run_dir={tmp_path}", "--dry_run", "--",
                     "--dataset=synthetic"], console=out)
  assert code == 0
  text = out.getvalue()
  assert text.count("TF_CONFIG=") == 2 and '"index": 1' in text
  assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--approach=bogus"], "approach"),
    (["--num_workers=0"], "--num_workers"),
    (["--", "--no_such_flag=1"], "no_such_flag"),
    (["--", "--batch_size=abc"], "batch_size"),
    (["--", "--run_dir=/tmp/x"], "--run_dir"),
])
def test_usage_errors_exit_2_with_one_line(capsys, argv, needle):
  code = local.main(["launch", *argv])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1 and needle in err


# --- restarts, fault injection, host lists (issue 7) ---

def test_every_task_listens_on_its_own_host():
  for t in _plan("ps", 2, num_ps=1, host="10.0.0.5").tasks:
    assert t.env["TFDIST_BIND_ADDRESS"] == "10.0.0.5"


def test_fault_is_injected_in_the_first_attempt_only_and_later_attempts_resume():
  base = ["--epochs=2"]
  assert plan.attempt_argv("gossip", base, 0, "worker:1", 7) == (
      "--epochs=2", "--fail_task=worker:1", "--fail_at_step=7")
  assert plan.attempt_argv("gossip", base, 1, "worker:1", 7) == ("--epochs=2", "--resume")
  assert plan.attempt_argv("ps", base + ["--resume"], 2) == ("--epochs=2", "--resume")
  # All-reduce resumes by itself (BackupAndRestore): no flag to add.
  assert plan.attempt_argv("allreduce", base, 1, "worker:1", 7) == ("--epochs=2",)


def test_attempt_logs_are_kept_apart_only_when_restarts_are_enabled():
  assert plan.attempt_log_dir("/r", 0, 0) == "/r/logs"
  assert plan.attempt_log_dir("/r", 0, 2) == "/r/logs/attempt_0"
  assert plan.attempt_log_dir("/r", 2, 2) == "/r/logs/attempt_2"
  p = _plan(n=2, attempt=1, max_restarts=3)
  assert p.tasks[1].log_path == "/runs/x/logs/attempt_1/worker_1.log"


def test_a_restarted_task_keeps_its_address_and_drops_the_injected_fault():
  p = _plan("ps", 2, num_ps=1, fail_task="worker:1", fail_at_step=3)
  assert p.tasks[2].argv[3:] == ("--run_dir=/runs/x", "--epochs=1", "--fail_task=worker:1",
                                 "--fail_at_step=3")
  w1 = p.tasks[2]
  again = plan.restarted_task(w1, "/runs/x/logs/attempt_1", "ps", 1)
  assert again.address == w1.address and again.tf_config == w1.tf_config
  assert again.log_path == "/runs/x/logs/attempt_1/worker_1.log"
  assert again.argv[3:] == ("--run_dir=/runs/x", "--epochs=1", "--resume")


@pytest.mark.parametrize("approach,fail_task,step,ok", [
    ("allreduce", "worker:1", 5, True), ("allreduce", "worker:2", 5, False),
    ("allreduce", "chief:0", 5, False), ("ps", "ps:0", 5, True), ("ps", "worker:1", 0, False),
    ("fedavg", "chief:0", 2, True), ("fedavg", "worker:0", 2, False),
    ("gossip", "worker", 5, False)])
def test_fail_task_must_name_a_task_that_can_crash(approach, fail_task, step, ok):
  p = _plan(approach, 2, num_ps=1 if approach == "ps" else 0)
  if ok:
    plan.check_fail_task(approach, p.cluster, fail_task, step)
  else:
    with pytest.raises(ValueError):
      plan.check_fail_task(approach, p.cluster, fail_task, step)


def test_host_list_places_tasks_round_robin_with_consecutive_ports_per_host():
  p = _plan("ps", 2, num_ps=1, hosts=["10.0.0.1", "10.0.0.2"], port_base=30000)
  assert p.cluster == {"chief": ("10.0.0.1:30000",), "worker": ("10.0.0.2:30000", "10.0.0.1:30001"),
                       "ps": ("10.0.0.2:30001",)}
  by_host = plan.host_plans(p)
  assert [t.name for t in by_host["10.0.0.1"]] == ["chief:0", "worker:1"]
  assert [t.name for t in plan.for_host(p, "10.0.0.2").tasks] == ["worker:0", "ps:0"]
  assert {t.env["TFDIST_BIND_ADDRESS"] for t in plan.for_host(p, "10.0.0.2").tasks} == {"10.0.0.2"}
  # Every host computes the same cluster from the same flags.
  assert _plan("ps", 2, num_ps=1, hosts=["10.0.0.1", "10.0.0.2"], port_base=30000).cluster == p.cluster
  with pytest.raises(ValueError, match="no task"):
    plan.for_host(p, "10.0.0.9")
  with pytest.raises(ValueError):
    _plan(n=2, hosts=["a", "a"], port_base=30000)
  with pytest.raises(ValueError):
    _plan(n=2, hosts=["a"], port_base=80)


def test_hosts_flag_prints_each_hosts_command_with_its_tf_config(tmp_path):
  out = io.StringIO()
  code = local.main(["launch", "--approach=allreduce", "--num_workers=2", "--hosts=hA,hB",
                     "--port_base=31000", f"--run_dir={tmp_path}", "--", "--epochs=1"],
                    console=out)
  text = out.getvalue()
  assert code == 0, text
  assert "# host hA: worker:0" in text and "# host hB: worker:1" in text
  assert "--this_host=hA" in text and "--this_host=hB" in text
  assert text.count("TF_CONFIG=") == 2 and "hB:31000" in text
  assert not (tmp_path / "logs").exists()  # nothing started


@pytest.mark.parametrize("argv,needle", [
    (["--this_host=a"], "--hosts"),
    (["--hosts=a,b", "--this_host=c"], "this_host=c"),
    (["--max_restarts=-1"], "max_restarts"),
    (["--fail_task=worker:5", "--fail_at_step=3"], "fail_task"),
    (["--fail_task=worker:1"], "together"),
    (["--max_restarts=1", "--", "--fail_task=worker:1", "--fail_at_step=2"], "launcher"),
])
def test_fault_and_host_usage_errors_exit_2_with_one_line(capsys, argv, needle):
  code = local.main(["launch", "--num_workers=2", *argv])
  err = capsys.readouterr().err.strip()
  assert code == 2, err
  assert len(err.splitlines()) == 1 and needle in err


def test_the_dry_run_plan_is_what_runs_bind_shim_and_approach_env_included(tmp_path):
  p = _plan("ps", 2, num_ps=1, preload=("/x/libtfdist_task.so", "/y/other.so"))
  for t in p.tasks:
    assert t.env["LD_PRELOAD"] == "/x/libtfdist_task.so /y/other.so"
    assert t.env["GRPC_FAIL_FAST"] == "use_caller"
  text = p.describe()
  assert text.count("LD_PRELOAD=/x/libtfdist_task.so") == 4
  assert text.count("GRPC_FAIL_FAST=use_caller") == 4
  # The spawner adds only PYTHONPATH on top of the parent's environment and the plan's.
  from launch import spawn  # pylint: disable=g-import-not-at-top
  env = spawn.child_env(p.tasks[0], {"HOME": "/root"}, "/repo")
  assert env == {"HOME": "/root", "PYTHONPATH": "/repo", **p.tasks[0].env}
  out = io.StringIO()
  assert local.main(["launch", "--approach=ps", f"--run_dir={tmp_path}", "--dry_run"],
                    console=out) == 0
  assert "GRPC_FAIL_FAST=use_caller" in out.getvalue()
  assert "TFDIST_BIND_ADDRESS=127.0.0.1" in out.getvalue()


# --- regimes: capped links and a straggler (issue 15) ---

@pytest.mark.parametrize("argv,needle", [
    (["--link=fast"], "--link"),
    (["--link=0mbit"], "--link"),
    (["--link=10mbit", "--hosts=10.0.0.1,10.0.0.2"], "--link"),
    (["--straggler=worker:1"], "ROLE:INDEX:FACTOR"),
    (["--straggler=worker:5:3"], "not a task of this job"),
    (["--straggler=worker:1:1"], "FACTOR"),
    (["--straggler=worker:1:x"], "ROLE:INDEX:FACTOR"),
    (["--approach=gossip", "--num_workers=3", "--", "--topology=one_peer_exp"],
     "power-of-two"),
    (["--", "--partition=skewed"], "partition"),
    (["--", "--partition=dirichlet", "--dirichlet_alpha=0"], "--dirichlet_alpha"),
])
def test_regime_usage_errors_exit_2_with_one_line(capsys, argv, needle):
  code = local.main(["launch", *argv])
  err = capsys.readouterr().err.strip()
  assert code == 2
  assert len(err.splitlines()) == 1 and needle in err, err


def test_straggler_and_namespaces_reach_the_plan_and_the_dry_run(capsys, tmp_path):
  names = LaunchConfig("ps", 2, "/r", num_ps=1).task_names
  assert names == ["chief:0", "worker:0", "worker:1", "ps:0"]
  assert plan.parse_straggler("worker:1:3", names) == ("worker:1", 3.0)
  p = _plan("ps", 2, num_ps=1, straggler=("worker:1", 3.0),
            netns={n: f"ns{k}" for k, n in enumerate(names)})
  by = {t.name: t for t in p.tasks}
  assert by["worker:1"].slowdown == 3.0 and by["worker:0"].slowdown == 1.0
  assert [t.netns for t in p.tasks] == ["ns0", "ns1", "ns2", "ns3"]
  assert "straggler: 3x slower" in p.describe() and "netns ns2" in p.describe()
  # The dry run shows the links' addresses in TF_CONFIG without needing root.
  buf = io.StringIO()
  assert local.main(["launch", "--approach=allreduce", "--num_workers=2", "--link=10mbit",
                     "--straggler=worker:1:2", "--dry_run", f"--run_dir={tmp_path}"],
                    console=buf) == 0
  out = buf.getvalue()
  assert "10.213.0.1:20000" in out and "10.213.0.2:20000" in out
  assert "straggler: 2x slower" in out and "links: 10 Mbit/s" in out


@pytest.mark.parametrize("trainer_argv,needle", [
    (["--dp_noise_multiplier=-1"], "--dp_noise_multiplier"),
    (["--proximal_strength=0.1"], "--proximal_strength"),
    (["--algorithm=fedprox"], "--proximal_strength"),
    (["--client_dropout=1.0"], "--client_dropout"),
    (["--dp_clip=1.0"], "--dp_clip needs --dp_noise_multiplier"),
    (["--dp_noise_multiplier=1", "--aggregator=compression"], "--dp_noise_multiplier"),
    (["--server_optimizer=lamb"], "server_optimizer"),
    (["--algorithm=scaffold", "--server_optimizer=adam"], "--algorithm=scaffold"),
    (["--algorithm=scaffold", "--aggregator=compression"], "--algorithm=scaffold"),
    (["--algorithm=scaffaold"], "algorithm"),
])
def test_federated_flags_are_refused_with_one_line_before_anything_starts(capsys, tmp_path,
                                                                         trainer_argv, needle):
  code = local.main(["launch", "--approach=fedavg", "--num_workers=0",
                     f"--run_dir={tmp_path}", "--", *trainer_argv])
  err = capsys.readouterr().err.strip()
  assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
  assert not (tmp_path / "logs").exists()  # nothing started
