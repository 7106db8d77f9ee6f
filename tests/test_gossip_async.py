"""Asynchronous gossip: the mixing step against numpy, who puts what where, the
one-sided puts through TF's runtime (two servers in one process), and the launcher's
runs: a stopped or slowed neighbour does not stop the others, a killed worker fails
the job cleanly, and real MNIST is learnt."""

import json
import os
import signal
import time

import numpy as np
import pytest

from cluster.errors import ConfigError
from trainers.common import volume
from trainers.common.config import TrainConfig
from trainers.gossip import async_gossip as ag
from trainers.gossip import mailbox as mb
from trainers.gossip import mixing
from trainers.gossip.config import Config
from tests import helpers


# --- the math -----------------------------------------------------------------------
def test_async_mix_with_every_neighbour_fresh_is_the_synchronous_row():
  rng = np.random.default_rng(0)
  n, size = 4, 7
  x = rng.normal(size=(n, size)).astype(np.float32)
  w = mixing.mixing_matrix(n, "ring")
  for i in range(n):
    nbrs = mixing.neighbours(n, "ring")[i]
    got = mixing.async_mix(x[i], {j: x[j] for j in nbrs}, {j: w[i, j] for j in nbrs})
    np.testing.assert_allclose(got, w[i] @ x.astype(np.float64), rtol=1e-6, atol=1e-6)


def test_async_mix_keeps_a_missing_neighbours_weight_on_its_own_model():
  own = np.array([1.0, 2.0], np.float32)
  left = np.array([4.0, 8.0], np.float32)
  # Ring of 4, Metropolis: 1/3 each. Only the left neighbour sent a new model.
  got = mixing.async_mix(own, {3: left}, {1: 1 / 3, 3: 1 / 3})
  np.testing.assert_allclose(got, own + (left - own) / 3, rtol=1e-6)
  np.testing.assert_allclose(got, [2.0, 4.0], rtol=1e-6)
  assert mixing.async_mix(own, {}, {1: 0.5}).tolist() == own.tolist()


def test_the_job_clock_and_a_workers_estimate_of_it():
  empty = np.full(len(ag.STATUS_FIELDS), mb.EMPTY, np.float32)
  status = {1: np.array([30] + [0] * 5, np.float32), 2: empty,
            3: np.array([10] + [0] * 5, np.float32)}
  assert ag.job_step(50, status, 4) == (50 + 30 + 10) // 4  # one not heard from yet: 0
  assert ag.heard_step(50, status) == (50 + 30 + 10) // 3
  assert ag.heard_step(7, {}) == 7


def test_staleness_counts_the_neighbours_steps_and_never_goes_negative():
  assert mixing.staleness(neighbour_step=40, model_step=31) == 9
  assert mixing.staleness(neighbour_step=30, model_step=31) == 0  # status lags the model


def test_who_puts_what_where_on_a_ring_of_four():
  chief, other = ag.plan_for(0, 4, "ring", 10), ag.plan_for(2, 4, "ring", 10)
  assert chief.model_to == chief.model_from == (1, 3) and other.out_peers(7) == (1, 3)
  assert chief.status_from == (1, 2, 3) and other.status_from == (1, 3)
  assert other.status_to == (0, 1, 3) and chief.status_to == (1, 3)
  assert chief.incoming()[mb.FINAL] == ((1, 2, 3), 10 + len(ag.FINAL_FIELDS) + 4 + 1)
  assert chief.outgoing()[mb.CONTROL] == ((1, 2, 3), 3)
  assert other.outgoing()[mb.FINAL] == ((0,), chief.sizes[mb.FINAL])
  assert other.incoming()[mb.CONTROL] == ((0,), 3)
  assert mb.CONTROL not in chief.incoming() and mb.FINAL not in other.incoming()
  assert other.incoming()[mb.MODEL] == ((1, 3), 11)
  w = mixing.mixing_matrix(4, "ring")
  assert other.weights([3], w) == {3: pytest.approx(1 / 3)}


def test_one_peer_exponential_puts_to_one_peer_in_turn_and_averages_with_what_came():
  p = ag.plan_for(1, 8, "one_peer_exp", 10)
  assert p.model_to == (2, 3, 5) and p.model_from == (0, 5, 7)  # 1 +- 1, 2, 4 (mod 8)
  assert [p.out_peers(t) for t in range(4)] == [(2,), (3,), (5,), (2,)]
  assert p.status_to == (0, 2, 3, 5) and p.status_from == (0, 5, 7)
  assert p.weights([7], None) == {7: 0.5}  # (x_i + x_j) / 2
  assert p.weights([0, 5], None) == {0: 0.25, 5: 0.25}  # x_i and the mean of the two
  own, a, b = np.zeros(2, np.float32), np.ones(2, np.float32), 3 * np.ones(2, np.float32)
  got = mixing.async_mix(own, {0: a, 5: b}, p.weights([0, 5], None))
  np.testing.assert_allclose(got, (own + (a + b) / 2) / 2)


def test_final_vector_round_trip_and_the_analytic_bytes_of_every_put():
  clock = ag.Clock(step=12, mixes=5, staleness_sum=7, staleness_max=3, train_seconds=1.5)
  params = np.arange(6, dtype=np.float32)
  v = ag.final_vector(params, (0.25, 0.875), clock, status_pushes=8, control_pushes=0,
                      model_pushes=[0, 9, 0])
  got_params, figures = ag.parse_final(v, 6, 3)
  assert got_params.tolist() == params.tolist() and v[-1] == 1.0
  assert figures["step"] == 12 and figures["model_pushes"] == [0, 9, 0]
  assert figures["test_accuracy"] == 0.875 and figures["train_seconds"] == 1.5
  # Two workers, 6 parameters: worker 0 (chief) put 4 models and 10 statuses into
  # worker 1 and 1 control; worker 1 put 3 models, 6 statuses and its final into 0.
  plans = [ag.plan_for(0, 2, "ring", 6), ag.plan_for(1, 2, "ring", 6)]
  figs = [{"model_pushes": [0, 4], "status_pushes": 10, "control_pushes": 1},
          {"model_pushes": [3, 0], "status_pushes": 6, "control_pushes": 0}]
  sizes = plans[0].sizes
  got = ag.analytic_tasks(sizes, figs, plans)
  w0 = 4 * 4 * 7 + 10 * 4 * len(ag.STATUS_FIELDS) + 1 * 4 * 3
  w1 = 3 * 4 * 7 + 6 * 4 * len(ag.STATUS_FIELDS) + 4 * sizes[mb.FINAL]
  assert got == {"worker:0": {"sent": w0, "received": w1},
                 "worker:1": {"sent": w1, "received": w0}}
  assert volume.pushes_tasks({"m": 3}, [("m", 0, 1, 2)]) == {
      "worker:0": {"sent": 24.0, "received": 0.0}, "worker:1": {"sent": 0.0, "received": 24.0}}


def test_async_refuses_what_it_cannot_do():
  train = TrainConfig(approach="gossip", run_dir="/tmp/unused")
  with pytest.raises(ConfigError, match="exchange=gradients"):
    Config(train=train, gossip_mode="async", exchange="gradients")
  with pytest.raises(ConfigError, match="resume"):
    Config(train=TrainConfig(approach="gossip", run_dir="/tmp/unused", resume=True),
           gossip_mode="async")
  assert Config(train=train, gossip_mode="async").is_async


# --- the transport: two TF servers in this process ----------------------------------------
def test_one_sided_puts_land_in_the_owners_slot_and_a_pusher_sends_the_newest():
  import portpicker  # pylint: disable=g-import-not-at-top
  cluster = {"worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(2)]}
  a = mb.Mailbox(cluster, 0, {mb.MODEL: ((1,), 4)}, {mb.MODEL: ((1,), 4)})
  b = mb.Mailbox(cluster, 1, {mb.MODEL: ((0,), 4)}, {mb.MODEL: ((0,), 4)})
  try:
    assert b.read([(mb.MODEL, 0)])[0].tolist() == [mb.EMPTY] * 4  # nothing yet
    a.write(mb.MODEL, 1, np.array([1, 2, 3, 4], np.float32))
    assert b.read([(mb.MODEL, 0)])[0].tolist() == [1, 2, 3, 4]
    pusher = mb.Pusher(lambda v: b.write(mb.MODEL, 0, v), "test")
    for k in range(50):
      pusher.offer(np.full(4, k, np.float32))
    pusher.flush(30)
    assert a.read([(mb.MODEL, 1)])[0].tolist() == [49] * 4  # the newest, whatever was skipped
    burst = pusher.count()  # 1 to 50: vectors offered while a put was in flight are skipped
    assert 1 <= burst <= 50
    for k in (100, 101):  # offered one at a time, each waited for: each is one put
      pusher.offer(np.full(4, k, np.float32))
      pusher.flush(30)
    assert pusher.count() == burst + 2
    assert a.read([(mb.MODEL, 1)])[0].tolist() == [101] * 4
    assert pusher.stop() and pusher.failure is None and pusher.errors == 0
  finally:
    a.close()
    b.close()


def test_a_put_that_lands_before_the_owner_has_made_its_slots_is_not_lost():
  """The owner's server listens before its slots exist: a peer's first put (the
  one-time step-0 status, say) can land first. The owner must not overwrite it."""
  import portpicker  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  cluster = {"worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(2)]}
  # worker 0's server is up, its slots not yet made (what happens between
  # tf.distribute.Server(start=True) and the Mailbox's first local run).
  server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name="worker",
                                task_index=0, start=True)
  b = mb.Mailbox(cluster, 1, {}, {mb.STATUS: ((0,), 3), mb.CONTROL: ((0,), 3)})
  try:
    b.write(mb.STATUS, 0, np.array([0, 5, 7], np.float32))
    a = mb.Mailbox(cluster, 0, {mb.STATUS: ((1,), 3)}, {}, server=server)
    try:
      assert a.read([(mb.STATUS, 1)])[0].tolist() == [0, 5, 7]
    finally:
      a.close()
  finally:
    b.close()


def test_control_flags_only_rise_so_a_late_put_cannot_undo_a_newer_one():
  import portpicker  # pylint: disable=g-import-not-at-top
  cluster = {"worker": [f"localhost:{portpicker.pick_unused_port()}" for _ in range(2)]}
  chief = mb.Mailbox(cluster, 0, {}, {mb.CONTROL: ((1,), 3)})
  other = mb.Mailbox(cluster, 1, {mb.CONTROL: ((0,), 3)}, {})
  try:
    assert other.read([(mb.CONTROL, 0)])[0].tolist() == [mb.EMPTY] * 3
    chief.write(mb.CONTROL, 1, np.array([1, 1, 1], np.float32))  # stop, release, go
    chief.write(mb.CONTROL, 1, np.array([0, 0, 1], np.float32))  # an older put, late
    assert other.read([(mb.CONTROL, 0)])[0].tolist() == [1, 1, 1]
  finally:
    chief.close()
    other.close()


def test_a_pusher_whose_thread_fails_fails_the_job_at_once_with_its_error():
  def write(_):
    raise ValueError("bad vector layout")
  pusher = mb.Pusher(write, "model->1")
  pusher.offer(np.zeros(2, np.float32))
  started = time.monotonic()
  with pytest.raises(RuntimeError, match="model->1: pusher failed: ValueError: bad vector"):
    pusher.flush(60)  # not after its deadline: at once
  assert time.monotonic() - started < 5
  with pytest.raises(RuntimeError, match="bad vector layout"):
    pusher.offer(np.zeros(2, np.float32))
  # A retried failure (the peer not up yet) is counted and tried again, not fatal.
  calls = []

  def flaky(v):
    calls.append(v)
    if len(calls) < 3:
      raise RuntimeError("not listening yet")
  retried = mb.Pusher(flaky, "status->2", retry_s=0.01)
  retried.offer(np.ones(2, np.float32))
  retried.flush(10)
  assert (retried.errors, retried.count(), retried.failure) == (2, 1, None)
  assert mb.stop_all([retried, pusher]) == []


# --- through the launcher -----------------------------------------------------------------
def _summary(run_dir) -> dict:
  return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.multiprocess
def test_a_slowed_neighbour_delays_nobody_and_mnist_is_learnt(tmp_path, mnist_dir):
  # worker:1 runs at 1/4 speed (the launcher's SIGSTOP/SIGCONT duty cycle, from its
  # start). The job stops at 1000 job steps (the workers' mean): worker:0 must take
  # most of them, and mix worker:1's models as they come, stale by a few of its steps.
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=2", "--straggler=worker:1:4",
       f"--run_dir={tmp_path}", "--timeout=300", "--", f"--data_dir={mnist_dir}",
       "--model=mlp", "--gossip_mode=async", "--steps_per_epoch=1000", "--log_every=250"],
      timeout_s=360)
  assert code == 0, out[-3000:]
  s = _summary(tmp_path)
  assert s["gossip_mode"] == "async" and s["label"] == "gossip/ring/async"
  fast, slow = s["worker_steps"]
  assert fast + slow >= 2 * 1000
  assert fast > 2.5 * slow, s["worker_steps"]  # synchronous gossip: equal counts
  assert s["worker_mixes"][0] > 0 and s["worker_mixes"][1] > 0
  assert s["staleness_max"] >= 1 and s["staleness_mean"] is not None
  assert s["examples_processed"] == (fast + slow) * 64
  assert s["test_accuracy"] > 0.9, s["test_accuracy"]
  assert s["consensus_distance"] < 0.05
  for way in ("sent", "received"):
    ratio = s[f"bytes_{way}_per_worker"] / s["bytes_analytic_per_worker"]
    assert 0.9 <= ratio <= 1.15, (way, ratio)
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  steps = [r for r in records if r["kind"] == "step" and "worker_steps" in r]
  assert steps and all(len(r["worker_steps"]) == 2 and "staleness_mean" in r for r in steps)


@pytest.mark.multiprocess
def test_a_stopped_neighbour_does_not_stop_the_others(tmp_path):
  # worker:2 of a ring of 3 is frozen (SIGSTOP) after training starts; workers 0 and 1
  # must keep stepping meanwhile (the chief's job clock keeps moving and its progress
  # lines keep coming), and the run ends normally once worker:2 is let go.
  launch = helpers.Launch(
      ["--approach=gossip", "--num_workers=3", f"--run_dir={tmp_path}", "--timeout=300",
       "--", "--dataset=synthetic", "--synthetic_examples=4096", "--batch_size=16",
       "--gossip_mode=async", "--steps_per_epoch=600", "--log_every=20"], timeout_s=360)
  try:
    deadline = time.monotonic() + 180
    while "step 20/600" not in launch.output:
      assert launch.proc.poll() is None and time.monotonic() < deadline, launch.output[-3000:]
      time.sleep(0.2)
    pid = helpers.task_pid(launch.tag, "worker", 2)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
      lines_before = launch.output.count("step ")
      # Two more progress points while worker:2 is frozen.
      deadline = time.monotonic() + 120
      while launch.output.count("step ") < lines_before + 2:
        assert time.monotonic() < deadline, "the others stopped with their neighbour"
        time.sleep(0.2)
    finally:
      os.kill(pid, signal.SIGCONT)
    code, out, _ = launch.wait()
    assert code == 0, out[-3000:]
  finally:
    if launch.proc.poll() is None:
      os.killpg(launch.proc.pid, signal.SIGKILL)
    helpers.assert_no_survivors(launch.tag)
  # The chief's progress records carry every worker's step as last announced: at two
  # points in a row worker:2's stood still while workers 0 and 1 went on.
  records = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  steps = [r["worker_steps"] for r in records if r["kind"] == "step"]
  assert any(b[2] == a[2] and b[0] > a[0] and b[1] > a[1] for a, b in zip(steps, steps[1:])
             ), steps
  assert _summary(tmp_path)["worker_steps"][2] > 0


@pytest.mark.multiprocess
def test_a_worker_killed_mid_run_fails_the_job_cleanly(tmp_path):
  code, out, _ = helpers.run_launcher(
      ["--approach=gossip", "--num_workers=2", f"--run_dir={tmp_path}", "--timeout=240",
       "--", "--dataset=synthetic", "--synthetic_examples=1024", "--batch_size=16",
       "--gossip_mode=async", "--steps_per_epoch=400", "--fail_task=worker:1",
       "--fail_at_step=30"], timeout_s=300)
  assert code != 0
  assert "worker:1" in out and "exit code 3" in out, out[-3000:]
  assert not (tmp_path / "summary.json").exists()


def test_the_wire_layout_is_one_definition_round_tripped():
  from trainers.gossip import protocol
  clock = ag.Clock(step=7, mixes=3, staleness_sum=5, staleness_max=4, loss=0.5, accuracy=0.9)
  assert ag.status_dict(clock.vector()) == {"step": 7.0, "mixes": 3.0, "staleness_sum": 5.0,
                                            "staleness_max": 4.0, "loss": 0.5,
                                            "accuracy": pytest.approx(0.9)}
  assert protocol.encode(protocol.Control(stop=1.0, go=1.0)).tolist() == [1.0, 0.0, 1.0]
  assert (ag.STOP, ag.RELEASE, ag.GO) == (0, 1, 2)
  with pytest.raises(ValueError, match="Final vector needs 9"):
    protocol.decode(protocol.Final, np.zeros(3))
