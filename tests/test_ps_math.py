"""Exact arithmetic of synchronous parameter-server aggregation."""

import numpy as np
import pytest
import tensorflow as tf

from trainers.ps import aggregation as ps_math


def _run_one_global_step(mode):
  var = tf.Variable([0.0, 0.0, 0.0])
  opt = tf.keras.optimizers.SGD(learning_rate=1.0)
  acc = ps_math.make_accumulators([var])
  grads = [np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]), np.array([2.0, 2.0, 8.0])]
  for g in grads:
    ps_math.accumulate(acc, [tf.constant(g, tf.float32)])
  assert int(opt.iterations.numpy()) == 0  # nothing applied while gradients arrive
  ps_math.apply_and_reset(opt, acc, [var], len(grads), mode)
  return var.numpy(), opt, acc


def test_sum_mode_applies_exactly_one_update_equal_to_the_sum():
  value, opt, acc = _run_one_global_step("sum")
  np.testing.assert_array_equal(value, [-6.0, -6.0, -12.0])
  assert int(opt.iterations.numpy()) == 1
  np.testing.assert_array_equal(acc[0].numpy(), [0.0, 0.0, 0.0])  # cleared for the next step


def test_mean_mode_applies_exactly_one_update_equal_to_the_mean():
  value, opt, _ = _run_one_global_step("mean")
  np.testing.assert_allclose(value, [-2.0, -2.0, -4.0], rtol=0, atol=1e-6)
  assert int(opt.iterations.numpy()) == 1


def test_unknown_aggregation_is_rejected():
  with pytest.raises(ValueError, match="sync_aggregation"):
    ps_math.aggregate([tf.Variable([1.0])], 1, "median")


def test_merge_shards_rebuilds_row_partitioned_weights():
  w = np.arange(12.0).reshape(6, 2)
  b = np.arange(2.0)
  merged = ps_math.merge_shards([w[:3], w[3:], b], [(6, 2), (2,)])
  np.testing.assert_array_equal(merged[0], w)
  np.testing.assert_array_equal(merged[1], b)
  with pytest.raises(ValueError):
    ps_math.merge_shards([w[:3], b], [(6, 2), (2,)])


def test_closure_sizes_add_up_to_exactly_the_planned_steps():
  from trainers.ps.aggregation import closure_sizes
  assert closure_sizes(37, 10) == [10, 10, 10, 7]
  assert closure_sizes(40, 10) == [10] * 4
  assert closure_sizes(3, 10) == [3]


def test_sync_closures_default_to_one_step_and_async_to_ten():
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from trainers.ps.config import Config  # pylint: disable=g-import-not-at-top
  train = TrainConfig(approach="ps", dataset="synthetic", run_dir="/tmp/unused")
  assert Config(train).closure_steps == 10
  assert Config(train, ps_mode="sync").closure_steps == 1
  assert Config(train, ps_mode="sync", steps_per_closure=4).closure_steps == 4
  with pytest.raises(Exception, match="--sync_stall_s must be > 0"):
    Config(train, ps_mode="sync", sync_stall_s=0)


def test_the_barrier_watchdog_fires_once_when_the_step_stops_and_never_while_it_moves():
  """barrier.Watchdog on a fake clock: the step moves for a while, then stops."""
  import threading  # pylint: disable=g-import-not-at-top
  from trainers.ps import barrier  # pylint: disable=g-import-not-at-top
  now, steps, fired = [0.0], iter([0, 1, 2, 3] + [3] * 10_000), threading.Event()

  def read_step():
    now[0] += 1.0  # one second a poll
    return next(steps)

  with barrier.Watchdog(read_step, fired.set, stall_s=5.0, poll_s=0.001,
                        clock=lambda: now[0]) as dog:
    assert fired.wait(5.0)
  assert dog.fired
  # Stopped at step 3 after 4 reads; fired at the first read 5 s after the last change.
  assert 8.0 <= now[0] <= 10.0
  # A step that keeps moving never fires; leaving the context stops the thread.
  moving = iter(range(10 ** 9))
  with barrier.Watchdog(lambda: next(moving), fired.clear, stall_s=0.01,
                        poll_s=0.001) as dog:
    threading.Event().wait(0.1)
  assert not dog.fired and not dog._thread.is_alive()  # pylint: disable=protected-access
