"""The peers beside the suite (issue 31): Horovod's Gloo ranks planned from TF_CONFIG,
a peer's run derived from the suite's run it stands beside, the same clients in both
FedAvg rows, the one-line refusal without `.venv-peers`, and (when `.venv-peers` is
built) both peers run through the launcher at a tiny size."""

import json
import os

import numpy as np
import pytest

from cluster import approaches
from experiments import budget, compare, peers, runspec
from peers import gloo
from tests import helpers

PEERS_MISSING = peers.missing()
needs_peers = pytest.mark.skipif(
    PEERS_MISSING is not None,
    reason=f"peers not built: {PEERS_MISSING} (make peers)")


# --- pure planning ---------------------------------------------------------------------
def test_gloo_ranks_follow_the_launchers_tasks_on_one_and_on_two_hosts():
  one = gloo.slots(["127.0.0.1:5000", "127.0.0.1:5001", "127.0.0.1:5002"])
  assert [(s.rank, s.local_rank, s.local_size, s.cross_rank, s.cross_size) for s in one] == [
      (0, 0, 3, 0, 1), (1, 1, 3, 0, 1), (2, 2, 3, 0, 1)]
  # The launcher puts task k on host k mod H: ranks alternate between the hosts.
  two = gloo.slots(["a:1", "b:1", "a:2", "b:2", "a:3"])
  assert [(s.hostname, s.local_rank, s.local_size, s.cross_rank, s.cross_size)
          for s in two] == [("a", 0, 3, 0, 2), ("b", 0, 2, 1, 2), ("a", 1, 3, 0, 2),
                            ("b", 1, 2, 1, 2), ("a", 2, 3, 0, 1)]
  env = gloo.env(["127.0.0.1:5000", "127.0.0.1:5001"], 1, "lo")
  assert env["HOROVOD_GLOO_RENDEZVOUS_ADDR"] == "127.0.0.1"
  assert env["HOROVOD_GLOO_RENDEZVOUS_PORT"] == "5000"  # worker 0's own address
  assert (env["HOROVOD_RANK"], env["HOROVOD_SIZE"], env["HOROVOD_CONTROLLER"]) == (
      "1", "2", "gloo")
  assert gloo.iface_of("127.0.0.1:5000") == "lo"


def test_a_peers_run_is_the_suite_runs_flags_given_to_its_program(tmp_path):
  fv = compare._parse(["compare", "--approaches=allreduce,fedavg,gossip"])
  suite = compare.plan_runs(fv, 60_000, str(tmp_path))
  venv = str(tmp_path / "venv")
  rows = peers.specs_beside(suite, list(peers.PEERS.values()), venv)
  assert [r.name for r in rows] == ["flower_fedavg", "horovod_allreduce"]
  for row in rows:
    mine = next(s for s in suite if s.name == peers.PEERS[row.name].beside.name)
    assert row.launcher_args == mine.launcher_args and row.approach == mine.approach
    assert row.program[:3] == (os.path.join(venv, "bin", "python"), "-m",
                               peers.PEERS[row.name].module)
    assert row.program[3] == f"--run_dir={tmp_path}/{row.name}"
    assert row.program[4:] == mine.trainer_args  # every trainer flag, the same
    argv = row.argv()
    assert argv[argv.index("--") + 1] == row.program[0]  # the launcher sees a program
  # With seeds, each peer run sits beside its seed's suite run; a given directory wins.
  seeded = compare.plan_runs(compare._parse(["compare", "--approaches=fedavg", "--seeds=2"]),
                             60_000, str(tmp_path))
  assert [r.run_dir for r in peers.specs_beside(seeded, [peers.FLOWER], venv)] == [
      f"{tmp_path}/flower_fedavg/seed_42", f"{tmp_path}/flower_fedavg/seed_43"]
  assert peers.beside(peers.FLOWER, seeded[1], venv, run_dir="/x").run_dir == "/x"
  # A regime's trainer flags reach the peer's program too.
  shards = rows[0].with_args(("--link=10mbit",), ("--partition=shards",))
  assert shards.program[-1] == "--partition=shards" and "--link=10mbit" in shards.argv()


def test_peers_without_their_environment_is_one_line_naming_make_peers(tmp_path, monkeypatch,
                                                                       capsys):
  monkeypatch.setattr(peers, "VENV", str(tmp_path / "nothing"))
  monkeypatch.setattr(peers.missing, "__defaults__", (str(tmp_path / "nothing"),))
  assert compare.main(["compare", "--peers"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "make peers" in err[0] and err[0].startswith(
      "experiments.compare: error: --peers:")
  from experiments import bench
  assert bench.main(["bench", "--peers"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "make peers" in err[0]


def test_flower_refuses_what_it_does_not_do_in_one_line():
  from cluster.errors import ConfigError
  from peers import flower_fedavg
  from trainers.common.config import TrainConfig
  from trainers.federated.config import Config
  train = TrainConfig(approach=approaches.FEDAVG.name, run_dir="/tmp/x")
  flower_fedavg.check(Config(train=train))
  with pytest.raises(ConfigError, match="drop --algorithm"):
    flower_fedavg.check(Config(train=train, algorithm="scaffold"))
  with pytest.raises(ConfigError, match="drop --server_optimizer"):
    flower_fedavg.check(Config(train=train, server_optimizer="adam"))


def test_a_nodes_reply_splits_into_each_clients_weights():
  from peers import flower_fedavg
  a = [np.full(2, 1.0), np.full(3, 2.0)]
  b = [np.full(2, 5.0), np.full(3, 6.0)]
  got = flower_fedavg.split_updates(a + b, 2, [600, 300])
  assert [(len(w), n) for w, n in got] == [(2, 600), (2, 300)]
  assert got[1][0][1].tolist() == [6.0] * 3
  with pytest.raises(ValueError, match="3 arrays for 2 client"):
    flower_fedavg.split_updates(a + b[:1], 2, [600, 300])


def test_both_fedavg_rows_give_each_client_the_same_examples(tmp_path):
  """The same partition function, seed and placement: Flower's node k mod N holds
  client k with exactly the examples the suite's service k mod N writes for it."""
  from peers import flower_fedavg
  from trainers.common import data
  from trainers.common.config import TrainConfig
  from trainers.federated import clients
  from trainers.federated.config import Config
  train = data.synthetic_split("train", 3000)
  for partition in ("iid", "shards"):
    cfg = TrainConfig(approach=approaches.FEDAVG.name, run_dir=str(tmp_path / partition),
                      partition=partition, seed=7)
    config = Config(train=cfg, num_clients=20)
    for service in range(2):
      ids = clients.write_service_clients(train, cfg, 20, service, 2)
      flower = flower_fedavg.node_clients(train, config, service, 2)
      assert sorted(flower) == sorted(ids)
      for k in ids:
        raw = open(clients.client_path(cfg.run_dir, k, 2), "rb").read()
        rec = np.frombuffer(raw, np.uint8).reshape(-1, clients.RECORD_BYTES)
        assert len(rec) == len(flower[k])  # client sizes
        assert int(rec[:, 0].astype(np.int64).sum()) == int(flower[k].y.sum())  # label sums
        assert sorted(rec[:, 0].tolist()) == sorted(flower[k].y.tolist())


def test_the_fedavg_recipe_is_one_record_for_the_row_its_baseline_and_the_peer():
  r = budget.FEDAVG_DEFAULT
  plan = budget.plan_budget(approaches.FEDAVG_V.name, 60_000, 60_000, 2, 64)
  assert set(r.trainer_args()) <= set(plan.trainer_args)
  assert f"--local_batch_size={r.local_batch_size}" in plan.trainer_args
  assert f"--learning_rate={r.client_learning_rate:g}" in r.plain_args()


# --- through the launcher (needs .venv-peers) ----------------------------------------------
def _peer_run(tmp_path, name: str, approach: str, flags: list[str], timeout_s: float):
  spec = peers.beside(peers.PEERS[name], runspec.RunSpec(
      approach, str(tmp_path / "suite"), approach, ("--num_workers=2", "--timeout=200"),
      ("--dataset=synthetic", "--synthetic_examples=2000", "--model=mlp", *flags)),
      run_dir=str(tmp_path / name))
  code, out, _ = helpers.run_launcher(spec.argv()[1:], timeout_s)
  assert code == 0, out[-3000:]
  return json.loads((tmp_path / name / "summary.json").read_text()), out


@needs_peers
@pytest.mark.multiprocess
def test_horovod_trains_the_allreduce_row_and_its_bytes_are_the_ring(tmp_path):
  s, _ = _peer_run(tmp_path, "horovod_allreduce", approaches.ALLREDUCE.name,
                   ["--epochs=1", "--steps_per_epoch=30", "--log_every=10",
                    "--target_accuracy=0.9", "--eval_every_examples=1280"], 180)
  assert (s["status"], s["label"], s["peer"], s["steps"]) == ("ok", "horovod_allreduce",
                                                              "horovod", 30)
  assert s["reached_target"] and s["test_accuracy"] >= 0.9
  ratio = s["bytes_sent_per_worker"] / s["bytes_analytic_per_worker"]
  assert 1.0 <= ratio < 1.2, ratio  # Gloo's ring: 2(N-1)/N models a step, plus framing


@needs_peers
@pytest.mark.multiprocess
def test_flower_trains_the_fedavg_row_with_its_bytes_per_sampled_client(tmp_path):
  s, out = _peer_run(tmp_path, "flower_fedavg", approaches.FEDAVG.name,
                     ["--num_clients=20", "--clients_per_round=4", "--rounds=3",
                      "--target_accuracy=0.99", "--stop_at_target"], 240)
  assert (s["status"], s["label"], s["peer"]) == ("ok", "flower_fedavg", "flower")
  assert 1 <= s["rounds_run"] <= 3 and s["test_accuracy"] > 0.5
  # Model to each node with a sampled client, every sampled client's weights back.
  ratio = s["bytes_busiest_task"] / s["bytes_analytic_busiest_task"]
  assert 1.0 <= ratio < 1.1, ratio
  assert "INFO" not in out  # Flower's per-message log stays off the console
