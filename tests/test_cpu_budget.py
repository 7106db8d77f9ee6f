"""Each task's share of its host's cores (launch/cpu_budget.py) and how the plan
carries it: thread pools in the environment, cores in the affinity. No timing here."""

import io
import os

import pytest

from launch import cpu_budget
from launch import plan as planning
from launch.config import LaunchConfig, Machine


def test_compute_tasks_split_the_cores_ps_gets_one_thread_and_the_chief_all():
  shares = cpu_budget.assign(["chief:0", "worker:0", "worker:1", "ps:0"], range(8))
  assert shares["worker:0"].intra_op == shares["worker:1"].intra_op == 4
  assert shares["ps:0"].intra_op == 1
  # The chief works while the workers wait (evaluation, aggregation): all cores.
  assert shares["chief:0"].intra_op == 8
  assert all(s.inter_op == 2 and s.cpus == () for s in shares.values())
  assert shares["worker:0"].env() == {"TF_NUM_INTRAOP_THREADS": "4",
                                      "TF_NUM_INTEROP_THREADS": "2", "OMP_NUM_THREADS": "4"}


def test_more_compute_tasks_than_cores_still_get_one_thread_each():
  shares = cpu_budget.assign([f"worker:{i}" for i in range(4)], (0, 1))
  assert {s.intra_op for s in shares.values()} == {1}


def test_a_host_with_only_a_light_task_gives_it_the_cores():
  # FedAvg with --num_workers=0: the chief trains every client itself.
  assert cpu_budget.assign(["chief:0"], range(2))["chief:0"].intra_op == 2


def test_threads_per_task_overrides_the_share():
  shares = cpu_budget.assign(["worker:0", "worker:1", "ps:0"], range(2), threads_per_task=3)
  assert {s.intra_op for s in shares.values()} == {3}


def test_pinning_gives_each_compute_task_its_own_cores_and_light_roles_the_rest():
  shares = cpu_budget.assign(["chief:0", "worker:0", "worker:1", "ps:0"], (2, 3, 4, 5, 6),
                             pin=True)
  assert shares["worker:0"].cpus == (2, 3) and shares["worker:1"].cpus == (4, 5)
  assert shares["chief:0"].cpus == shares["ps:0"].cpus == (6,)
  assert shares["worker:1"].describe() == "threads intra 2 inter 2, cpus 4-5"
  # No core left over: light roles float over all of them.
  even = cpu_budget.assign(["chief:0", "worker:0", "worker:1"], (0, 1), pin=True)
  assert even["chief:0"].cpus == (0, 1) and even["worker:1"].cpus == (1,)


@pytest.mark.parametrize("tasks,cpus,kw,message", [
    (["worker:0", "worker:1", "worker:2"], (0, 1), {"pin": True}, "one core per compute task"),
    (["worker:0", "worker:1"], (0, 1, 2), {"pin": True, "threads_per_task": 2}, "need 4 cores"),
    (["worker:0"], (0,), {"threads_per_task": 0}, "--threads_per_task must be >= 1"),
])
def test_impossible_requests_are_one_line(tasks, cpus, kw, message):
  with pytest.raises(ValueError, match=message):
    cpu_budget.assign(tasks, cpus, **kw)


def test_the_plan_carries_each_share_per_host_and_the_dry_run_shows_it(tmp_path):
  ports = iter(range(20000, 20100))
  cores = Machine(cpu_ids=(0, 1, 2, 3))
  p = planning.make_plan(LaunchConfig("ps", 2, str(tmp_path), num_ps=1, pin_cpus=True),
                         lambda: next(ports), cores)
  by_name = {t.name: t for t in p.tasks}
  assert by_name["worker:1"].env["TF_NUM_INTRAOP_THREADS"] == "2"
  assert by_name["worker:1"].cpus == (2, 3) and by_name["ps:0"].cpus == (0, 1, 2, 3)
  assert by_name["chief:0"].env["TF_NUM_INTRAOP_THREADS"] == "4"
  assert by_name["ps:0"].env["TF_NUM_INTRAOP_THREADS"] == "1"
  assert "cpu threads intra 2 inter 2, cpus 2-3" in p.describe()
  # Over a host list, each host divides its own cores among its own tasks.
  hosts = planning.make_plan(LaunchConfig("allreduce", 4, str(tmp_path), hosts=("h1", "h2"),
                                          port_base=30000), lambda: 0, cores)
  assert {t.env["TF_NUM_INTRAOP_THREADS"] for t in hosts.tasks} == {"2"}
  # Without a budget nothing is set: TF sizes its pools for the machine.
  bare = planning.make_plan(LaunchConfig("gossip", 2, str(tmp_path), cpu_budget=False),
                            lambda: next(ports), cores)
  assert all("TF_NUM_INTRAOP_THREADS" not in t.env and t.cpus == () for t in bare.tasks)


def test_launcher_dry_run_shows_the_budget_and_refuses_an_impossible_pin(capsys):
  from launch import local  # pylint: disable=g-import-not-at-top

  out = io.StringIO()
  assert local.main(["launch", "--approach=gossip", "--num_workers=2", "--dry_run",
                     "--", "--dataset=synthetic"], console=out) == 0
  assert out.getvalue().count("    cpu threads intra ") == 2
  assert local.main(["launch", "--approach=gossip", "--num_workers=2", "--dry_run",
                     "--nocpu_budget", "--", "--dataset=synthetic"], console=io.StringIO()) == 0
  capsys.readouterr()
  many = len(os.sched_getaffinity(0)) + 1
  assert local.main(["launch", "--approach=gossip", f"--num_workers={many}", "--pin_cpus",
                     "--dry_run", "--", "--dataset=synthetic"], console=io.StringIO()) == 2
  err = capsys.readouterr().err
  assert err.count("\n") == 1 and "--pin_cpus needs at least one core" in err
