"""Slurm: TF_CONFIG from a faked srun environment, and launch/slurm/train.sbatch run
end to end under a stand-in srun (tests/fake_slurm/srun) on this machine."""

import json
import os
import subprocess

import pytest

from cluster import approaches, slurm
from cluster.errors import ConfigError
from tests import helpers

SBATCH = os.path.join(helpers.REPO, "launch", "slurm", "train.sbatch")
FAKE_BIN = os.path.join(helpers.REPO, "tests", "fake_slurm")


def _slurm_env(rank, ntasks, nodelist, per_node, node=None):
  env = {"SLURM_PROCID": str(rank), "SLURM_STEP_NUM_TASKS": str(ntasks),
         "SLURM_STEP_NODELIST": nodelist, "SLURM_STEP_TASKS_PER_NODE": per_node}
  if node:
    env["SLURMD_NODENAME"] = node
  return env


@pytest.mark.parametrize("approach,roles", [
    ("allreduce", {"worker": 4}), ("gossip", {"worker": 4}),
    ("ps", {"chief": 1, "ps": 1, "worker": 2}), ("fedavg", {"chief": 1, "worker": 3})])
def test_every_rank_gets_one_task_of_the_same_cluster(approach, roles):
  configs = []
  for rank in range(4):
    node = "node01" if rank < 2 else "node02"  # block distribution, 2 per node
    task = slurm.resolve(_slurm_env(rank, 4, "node[01-02]", "2(x2)", node),
                         approaches.get(approach), num_ps=1, port_base=9000)
    assert task.cuda_visible_devices == "" and task.bind_address == node
    configs.append(json.loads(task.tf_config))
  spec = configs[0]["cluster"]
  assert {r: len(a) for r, a in spec.items()} == roles
  assert all(c["cluster"] == spec for c in configs)
  assert sorted(a for addrs in spec.values() for a in addrs) == [
      "node01:9000", "node01:9001", "node02:9000", "node02:9001"]
  tasks = [(c["task"]["type"], c["task"]["index"]) for c in configs]
  assert len(set(tasks)) == 4
  # Each rank's own address is on the node it runs on.
  for rank, c in enumerate(configs):
    own = spec[c["task"]["type"]][c["task"]["index"]]
    assert own.startswith("node01:" if rank < 2 else "node02:")


def test_gpus_of_a_node_are_divided_among_its_tasks():
  task = slurm.resolve(_slurm_env(3, 4, "node[01-02]", "2(x2)", "node02"),
                       approaches.ALLREDUCE, num_gpus=4)
  assert task.cuda_visible_devices == "2,3"


def test_a_rank_placed_on_another_node_is_refused():
  env = _slurm_env(0, 2, "node[9-10]", "1(x2)", "node9")  # sorted order puts node10 first
  with pytest.raises(ConfigError, match="runs on node9"):
    slurm.resolve(env, approaches.ALLREDUCE)


def test_too_few_tasks_for_a_parameter_server_job():
  with pytest.raises(ConfigError, match="ps"):
    slurm.resolve(_slurm_env(0, 2, "n1", "2"), approaches.PS)


@pytest.mark.parametrize("nodes,per_node,hosts,counts", [
    ("node[01-02],gpu7", "3(x2),1", ["node01", "node02", "gpu7"], [3, 3, 1]),
    ("a[1,3-4]", "2", ["a1", "a3", "a4"], [2]),
    ("solo", "1", ["solo"], [1])])
def test_slurm_lists_expand_as_tf_expands_them(nodes, per_node, hosts, counts):
  from tensorflow.python.distribute.cluster_resolver import slurm_cluster_resolver as tf_slurm  # pylint: disable=g-import-not-at-top
  assert slurm.expand_hostlist(nodes) == hosts == tf_slurm.expand_hostlist(nodes)
  assert slurm.expand_tasks_per_node(per_node) == counts == \
      tf_slurm.expand_tasks_per_node(per_node)


def test_the_layout_is_tfs_slurm_cluster_resolvers():
  """The pure resolver agrees with TF's SlurmClusterResolver on a 3-node PS job."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  env = _slurm_env(0, 6, "n[1-3]", "2(x3)")
  old = dict(os.environ)
  for rank in range(6):
    env["SLURM_PROCID"] = str(rank)
    os.environ.update(env)
    try:
      ref = tf.distribute.cluster_resolver.SlurmClusterResolver(
          jobs={"chief": 1, "ps": 2, "worker": 3}, port_base=7000, gpus_per_node=4,
          auto_set_gpu=False)
      spec, mine = ref.cluster_spec().as_dict(), ref.get_task_info()
    finally:
      os.environ.clear()
      os.environ.update(old)
    task = slurm.resolve(env, approaches.PS, num_ps=2, port_base=7000, num_gpus=4)
    cfg = json.loads(task.tf_config)
    assert cfg["cluster"] == spec
    assert (cfg["task"]["type"], cfg["task"]["index"]) == mine
    assert task.cuda_visible_devices == ref._gpu_allocation[rank]  # pylint: disable=protected-access


def test_outside_srun_the_trainer_says_so_in_one_line():
  env = helpers.base_env("x")
  for k in list(env):
    if k.startswith("SLURM"):
      del env[k]
  out = subprocess.run([os.path.join(helpers.REPO, ".venv", "bin", "python")
                        if os.path.exists(os.path.join(helpers.REPO, ".venv")) else "python",
                        "-m", "trainers.allreduce", "--cluster_resolver=slurm"],
                       cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  assert "outside an srun step" in out.stderr.strip().splitlines()[-1]


@pytest.mark.multiprocess
@pytest.mark.parametrize("approach,ntasks,flags", [
    ("allreduce", 2, ["--steps_per_epoch=8"]),
    ("ps", 3, ["--steps_per_epoch=8", "--slurm_num_ps=1", "--steps_per_closure=2"])])
def test_sbatch_script_runs_the_job_under_srun(tmp_path, approach, ntasks, flags):
  import sys  # pylint: disable=g-import-not-at-top
  import uuid  # pylint: disable=g-import-not-at-top
  tag = uuid.uuid4().hex
  env = helpers.base_env(tag)
  port = _free_port_block(ntasks)
  env.update(PATH=FAKE_BIN + os.pathsep + env["PATH"], FAKE_SLURM_NTASKS=str(ntasks),
             RUN_DIR=str(tmp_path), PYTHON=sys.executable, SERVER_WAIT="1")
  try:
    out = subprocess.run(["bash", SBATCH, approach, "--dataset=synthetic",
                          "--synthetic_examples=512", "--batch_size=32", "--log_every=4",
                          f"--slurm_port_base={port}", *flags],
                         cwd=helpers.REPO, env=env, capture_output=True, text=True, timeout=300)
  finally:
    helpers.assert_no_survivors(tag)
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["steps"] == 8
  assert summary["num_workers"] == (2 if approach == "allreduce" else 1)


def _free_port_block(n):
  """A base port with n free consecutive ports above it."""
  import socket  # pylint: disable=g-import-not-at-top
  import portpicker  # pylint: disable=g-import-not-at-top
  for _ in range(50):
    base = portpicker.pick_unused_port()
    try:
      socks = []
      for p in range(base, base + n):
        s = socket.socket()
        s.bind(("127.0.0.1", p))
        socks.append(s)
      return base
    except OSError:
      continue
    finally:
      for s in socks:
        s.close()
  raise RuntimeError("no free port block")


@pytest.mark.multiprocess
def test_program_sbatch_runs_a_users_program_with_each_tasks_tf_config(tmp_path):
  """launch/slurm/program.sbatch under the stand-in srun: every task of a user's program
  sees its own place in one cluster."""
  import sys  # pylint: disable=g-import-not-at-top
  import uuid  # pylint: disable=g-import-not-at-top
  tag = uuid.uuid4().hex
  env = helpers.base_env(tag)
  port = _free_port_block(2)
  env.update(PATH=FAKE_BIN + os.pathsep + env["PATH"], FAKE_SLURM_NTASKS="2",
             PYTHON=sys.executable, PORT_BASE=str(port), TFDIST_RUN_DIR=str(tmp_path))
  try:
    out = subprocess.run(["bash", os.path.join(helpers.REPO, "launch", "slurm",
                                               "program.sbatch"),
                          "tests/user_programs/show_tf_config.py"], cwd=helpers.REPO,
                         env=env, capture_output=True, text=True, timeout=120)
  finally:
    helpers.assert_no_survivors(tag)
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  configs = {p.name: json.loads(p.read_text()) for p in tmp_path.glob("tf_config.*.json")}
  assert sorted(configs) == ["tf_config.worker_0.json", "tf_config.worker_1.json"]
  clusters = {json.dumps(c["cluster"], sort_keys=True) for c in configs.values()}
  assert len(clusters) == 1
  assert json.loads(clusters.pop()) == {"worker": [f"127.0.0.1:{port}", f"127.0.0.1:{port + 1}"]}


def test_slurm_exec_outside_srun_is_one_line():
  from launch import slurm_exec  # pylint: disable=g-import-not-at-top
  assert slurm_exec.main(["x", "--", "true"]) == 2
  assert slurm_exec.main(["x"]) == 2
