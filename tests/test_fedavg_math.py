"""Client partitions and sampling for FedAvg, and the exact arithmetic of its algorithms."""

import numpy as np
import pytest

from trainers.common import partition as part
from trainers.federated import fedmath as fm

# MNIST-like labels: 60,000 examples, roughly balanced classes, in no particular order.
LABELS = np.random.default_rng(0).integers(0, 10, 60_000)


def _disjoint_and_complete(parts, n):
  together = np.concatenate(parts)
  assert len(together) == n and len(np.unique(together)) == n


def test_iid_gives_600_each_of_mixed_labels():
  parts = part.iid(LABELS, 100, seed=1)
  _disjoint_and_complete(parts, 60_000)
  assert {len(p) for p in parts} == {600}
  hist = part.label_histograms(LABELS, parts)
  assert (hist > 0).sum(axis=1).min() == 10  # every client sees every digit


def test_shards_are_the_papers_two_shards_of_300_per_client():
  parts = part.shards(LABELS, 100, seed=1)
  _disjoint_and_complete(parts, 60_000)
  assert {len(p) for p in parts} == {600}
  labels_per_client = (part.label_histograms(LABELS, parts) > 0).sum(axis=1)
  assert labels_per_client.max() <= 4       # two shards, each spanning at most 2 digits
  assert np.median(labels_per_client) <= 2  # "most clients will only have two digits"
  # each shard is 300 consecutive examples of the label-sorted set
  order = np.argsort(LABELS, kind="stable")
  rank = np.empty_like(order)
  rank[order] = np.arange(len(order))
  for p in parts[:10]:
    blocks = sorted(set(rank[p] // 300))
    assert len(blocks) == 2


@pytest.mark.parametrize("alpha", [0.1, 1.0, 100.0])
def test_dirichlet_is_disjoint_complete_and_as_skewed_as_alpha_says(alpha):
  parts = part.dirichlet(LABELS, 100, alpha, seed=3)
  _disjoint_and_complete(parts, 60_000)
  assert min(len(p) for p in parts) >= 10
  hist = part.label_histograms(LABELS, parts)
  np.testing.assert_array_equal(hist.sum(axis=0), np.bincount(LABELS, minlength=10))


def test_dirichlet_skew_decreases_with_alpha():
  def mean_entropy(alpha):
    hist = part.label_histograms(LABELS, part.dirichlet(LABELS, 50, alpha, seed=3)).astype(float)
    p = hist / hist.sum(axis=1, keepdims=True)
    return float(-(np.where(p > 0, p * np.log(np.where(p > 0, p, 1)), 0)).sum(axis=1).mean())
  assert mean_entropy(0.1) < mean_entropy(1.0) < mean_entropy(100.0)
  assert mean_entropy(100.0) > 0.95 * np.log(10)


def test_partitions_are_reproducible_from_the_seed():
  for name in part.PARTITIONS:
    a = part.partition(name, LABELS, 20, seed=5)
    b = part.partition(name, LABELS, 20, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))


def test_client_sampling_is_seeded_per_round_and_without_replacement():
  r1 = fm.sample_clients(100, 10, 1, seed=0)
  assert len(set(r1)) == 10 and np.array_equal(r1, fm.sample_clients(100, 10, 1, seed=0))
  assert not np.array_equal(r1, fm.sample_clients(100, 10, 2, seed=0))
  with pytest.raises(ValueError, match="clients_per_round"):
    fm.sample_clients(5, 6, 1, seed=0)
  with pytest.raises(ValueError, match="partition"):
    part.partition("zipf", LABELS, 10, 0)


def test_client_drift_is_the_weighted_rms_distance_from_the_weighted_mean():
  updates = [np.array([1.0, 0.0]), np.array([3.0, 0.0]), np.array([0.0, 4.0])]
  weights = np.array([1.0, 1.0, 2.0])
  # Weighted mean (1 + 3 + 0) / 4 = 1, (0 + 0 + 8) / 4 = 2; squared distances 4, 8, 5.
  want = np.sqrt((1 * 4 + 1 * 8 + 2 * 5) / 4)
  assert fm.client_drift(updates, weights) == pytest.approx(want, abs=1e-12)
  # The federated form: E||u||^2 - ||E u||^2 from two weighted means.
  mean_sq = (1 * 1 + 1 * 9 + 2 * 16) / 4
  assert fm.drift_from_moments(mean_sq, 1 + 4) == pytest.approx(want, abs=1e-12)
  assert fm.client_drift([np.ones(3)] * 4, np.ones(4)) == 0.0
  assert fm.drift_from_moments(1.0, 1.0 + 1e-9) == 0.0  # rounding never gives NaN


def test_client_dropout_is_seeded_and_drops_about_p():
  sampled = np.arange(1000)
  a = fm.surviving_clients(sampled, 0.3, round_num=5, seed=1)
  np.testing.assert_array_equal(a, fm.surviving_clients(sampled, 0.3, 5, 1))
  assert not np.array_equal(a, fm.surviving_clients(sampled, 0.3, 6, 1))
  assert 650 <= len(a) <= 750 and set(a) <= set(sampled)
  np.testing.assert_array_equal(fm.surviving_clients(sampled[:10], 0.0, 1, 1), sampled[:10])


def test_dp_epsilon_grows_with_rounds_and_shrinks_with_noise():
  eps = [fm.dp_epsilon(1.0, 100, 10, r, 1e-5) for r in (1, 10, 100)]
  assert 0 < eps[0] < eps[1] < eps[2] < float("inf")
  assert fm.dp_epsilon(2.0, 100, 10, 100, 1e-5) < eps[2]
  assert fm.dp_epsilon(1.0, 100, 10, 100, 1e-3) < eps[2]   # a looser delta, a smaller epsilon
  assert fm.dp_epsilon(0.0, 100, 10, 1, 1e-5) == float("inf")
  assert fm.dp_epsilon(1.0, 100, 10, 0, 1e-5) == 0.0


def test_scaffold_step_is_sgd_corrected_by_the_two_control_variates():
  y, g = np.array([1.0, 2.0]), np.array([2.0, 4.0])
  c_i, c = np.array([0.25, 0.25]), np.array([0.5, -0.5])
  np.testing.assert_array_equal(fm.scaffold_step(y, g, c_i, c, 0.5),
                                [1.0 - 0.5 * 2.25, 2.0 - 0.5 * 3.25])
  # Zero variates: plain SGD.
  np.testing.assert_array_equal(fm.scaffold_step(y, g, 0 * c, 0 * c, 0.5), [0.0, 0.0])


def test_scaffold_option_two_variate_after_one_step_is_the_local_gradient():
  """c_i+ = c_i - c + (x - y) / (K lr): after K=1 step y = x - lr (g - c_i + c), so
  c_i+ = g exactly, the client's gradient at the server's model."""
  x, g = np.array([1.0, -3.0]), np.array([0.75, 1.5])
  c_i, c, lr = np.array([0.5, 0.25]), np.array([-0.25, 1.0]), 0.5
  y = fm.scaffold_step(x, g, c_i, c, lr)
  np.testing.assert_array_equal(fm.scaffold_client_control(c_i, c, x, y, 1, lr), g)
  # K steps: the average corrected step, divided back by lr.
  y2 = fm.scaffold_step(y, 2 * g, c_i, c, lr)
  np.testing.assert_array_equal(fm.scaffold_client_control(c_i, c, x, y2, 2, lr),
                                1.5 * g)


def test_scaffold_server_keeps_c_the_mean_of_all_clients_variates():
  """c += |S|/N mean_S(c_i+ - c_i): with every c_i starting at c's value, c stays
  the mean of all N variates after the sampled ones change."""
  n = 4
  old = [np.array([1.0, 2.0]), np.array([3.0, -2.0]), np.array([0.0, 4.0]),
         np.array([-4.0, 0.0])]
  c = np.mean(old, axis=0)
  new = list(old)
  new[0], new[2] = np.array([2.0, 2.0]), np.array([-1.0, 8.0])
  mean_dc = ((new[0] - old[0]) + (new[2] - old[2])) / 2
  x, mean_dy = np.array([1.0, 1.0]), np.array([0.5, -0.25])
  x_new, c_new = fm.scaffold_server(x, c, mean_dy, mean_dc, 2.0, 2 / n)
  np.testing.assert_array_equal(x_new, [2.0, 0.5])
  np.testing.assert_array_equal(c_new, np.mean(new, axis=0))


def test_the_computation_cache_keys_by_content_not_by_object():
  """Two objects of the same computation share one key (a recompiled round is not
  sent again); a different computation gets another."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_federated as tff  # pylint: disable=g-import-not-at-top
  from trainers.federated import executors  # pylint: disable=g-import-not-at-top

  def build(k):
    @tff.tensorflow.computation(tf.float32)
    def add(x):
      return x + k
    return add

  a, b, c = build(1.0), build(1.0), build(2.0)
  assert a is not b
  assert executors.computation_key(a) == executors.computation_key(b)
  assert executors.computation_key(a) != executors.computation_key(c)
  executors.check_tff_version()  # the pinned TFF


def test_a_service_needs_slots_for_its_busiest_round_only():
  from trainers.common.config import TrainConfig  # pylint: disable=g-import-not-at-top
  from trainers.federated import clients, config as fed_config, fedmath, rounds  # pylint: disable=g-import-not-at-top
  config = fed_config.Config(train=TrainConfig(approach="fedavg"), rounds=10)
  # One service trains every sampled client; four need far fewer slots than C each.
  assert rounds.busiest_service(config, 42, 1) == 10
  four = rounds.busiest_service(config, 42, 4)
  assert four == max(len(g) for r in range(1, 11) for g in clients.by_service(
      fedmath.sample_clients(100, 10, r, 42), 4))
  assert 3 <= four < 10
  # A resumed run's remaining rounds need no more than the whole run's.
  assert rounds.busiest_service(config, 42, 4, first_round=6) <= four
