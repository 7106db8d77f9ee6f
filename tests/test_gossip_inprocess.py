"""Gossip in one process: the neighbour exchange's bookkeeping against W @ X, with a
table standing in for the peers' collectives, and the trainer's real run() on one
worker (the multi-worker exchange runs in tests/test_gossip_multiprocess.py)."""

import json

import numpy as np
import pytest
import tensorflow as tf

from cluster.tf_config import SINGLE_PROCESS
from trainers.gossip import mixing as gossip_math
from trainers.gossip import trainer as gossip
from trainers.common.config import TrainConfig
from trainers.gossip.exchange import INSTANCE_PARAMS, NeighbourExchange, exchange_groups


def _table_gather(x: np.ndarray, calls: list):
  """gather() over a table of every worker's vector: what the collectives deliver."""
  def gather(vector, me, group_key, members, instance_key):
    calls.append((me, group_key, tuple(members), instance_key))
    rows = [np.concatenate([[j], vector.numpy() if j == me else x[j]]) for j in sorted(members)]
    return tf.constant(np.stack(rows), tf.float32)
  return gather


@pytest.mark.parametrize("n,topology", [(4, "ring"), (6, "torus"), (8, "exponential"),
                                        (5, "full")])
def test_every_worker_mixes_exactly_its_row_of_w(n, topology):
  x = np.random.default_rng(0).integers(-8, 8, size=(n, 5)).astype(np.float32)
  want = gossip_math.gossip_step(x.astype(np.float64), gossip_math.mixing_matrix(n, topology))
  calls = []
  for me in range(n):
    exchange = NeighbourExchange(me, n, topology, "metropolis", gather=_table_gather(x, calls))
    got = exchange.mix(tf.constant(x[me]), INSTANCE_PARAMS).numpy()
    np.testing.assert_allclose(got, want[me], rtol=0, atol=1e-5)
    assert exchange.payload_bytes(5) == exchange.degree * 6 * 4
  # Every member of a group uses the same group and instance keys (collectives pair up),
  # and a worker takes part only in its own edges' groups.
  by_group = {}
  for me, group, members, instance in calls:
    assert me in members
    by_group.setdefault((group, members), set()).add(instance)
  assert all(len(instances) == 1 for instances in by_group.values())
  assert {g for g, _ in by_group} == {k for k, _ in exchange_groups(n, topology)}


@pytest.mark.parametrize("n", [2, 4, 8])
def test_one_peer_exchange_sends_to_one_peer_in_an_order_that_cannot_deadlock(n):
  """Every send meets a worker that receives first, phase by phase; the mix is row i
  of W_t, and only the vector (no id) goes over the wire, to one peer."""
  x = np.random.default_rng(1).integers(-8, 8, size=(n, 3)).astype(np.float32)
  for phase in range(gossip_math.one_peer_phases(n)):
    want = gossip_math.one_peer_matrix(n, phase) @ x.astype(np.float64)
    order, sends, recvs = {}, {}, {}
    for me in range(n):
      ops = []

      def send(vector, key, instance, me=me, ops=ops):
        ops.append("send")
        sends[key] = (me, instance)
        return tf.constant(0.0)

      def recv(like, key, instance, ops=ops):
        ops.append("recv")
        recvs.setdefault(key, []).append(instance)
        return tf.constant(x[(me - 2 ** phase) % n])

      exchange = NeighbourExchange(me, n, gossip_math.ONE_PEER_EXP, "metropolis",
                                   send=send, recv=recv)
      got = exchange.mix(tf.constant(x[me]), INSTANCE_PARAMS, phase).numpy()
      np.testing.assert_allclose(got, want[me], atol=1e-6)
      assert exchange.degree == 1 and exchange.payload_bytes(3) == 3 * 4
      order[me] = ops
    # Each directed edge's group: one sender, one receiver, the same instance key.
    assert sorted(sends) == sorted(recvs)
    assert all(recvs[k] == [sends[k][1]] for k in sends)
    # The receiver of every send receives before it sends (no cycle of blocked sends).
    for me in range(n):
      to = (me + 2 ** phase) % n
      if order[me] == ["send", "recv"]:
        assert order[to] == ["recv", "send"]


def test_gossip_run_on_one_worker_learns_and_writes_the_contract(tmp_path):
  cfg = TrainConfig(approach="gossip", dataset="synthetic", synthetic_examples=1024,
                    batch_size=32, epochs=2, log_every=10, eval_every_examples=512,
                    run_dir=str(tmp_path))
  summary = gossip.run(gossip.GossipConfig(cfg), SINGLE_PROCESS, flag_values={"epochs": 2})
  assert summary["label"] == "gossip/ring" and summary["num_workers"] == 1
  assert summary["steps"] == 2 * (1024 // 32) and summary["exchanges"] == 0
  assert summary["consensus_distance"] == 0.0 and summary["bytes_analytic_per_worker"] == 0
  assert summary["test_accuracy"] > 0.9
  assert summary["worker_test_accuracy"] == pytest.approx([summary["test_accuracy"]])
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
  # Mid-epoch evaluations at 512 and 1536 examples (the epoch ends evaluate themselves).
  assert [r["examples_seen"] for r in records if r["kind"] == "eval"] == [512, 1536]
  assert list((tmp_path / "ckpt" / "worker_0").glob("ckpt-*.index"))
