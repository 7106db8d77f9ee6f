"""Gossip topologies and mixing: stochasticity, average preservation, convergence rate."""

import numpy as np
import pytest

from trainers.gossip import mixing as gm

STATIC = [t for t in gm.TOPOLOGIES if t != gm.ONE_PEER_EXP]
CASES = [(n, t, m) for n in (4, 6, 8, 9) for t in STATIC for m in gm.MIXINGS]


@pytest.mark.parametrize("n,topology,mixing", CASES)
def test_weights_are_symmetric_doubly_stochastic_and_nonnegative(n, topology, mixing):
  w = gm.mixing_matrix(n, topology, mixing)
  np.testing.assert_allclose(w, w.T, atol=1e-15)
  np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
  np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
  assert (w >= 0).all()
  nbrs = gm.neighbours(n, topology)
  for i in range(n):  # only neighbours (and self) get weight: traffic follows the graph
    assert set(np.nonzero(w[i])[0]) <= set(nbrs[i]) | {i}
  assert 0 < gm.spectral_gap(w) <= 1


def test_topologies_have_the_expected_neighbours():
  assert gm.neighbours(6, "ring")[0] == [1, 5]
  assert gm.neighbours(9, "torus")[4] == [1, 3, 5, 7]  # 3x3 grid, centre
  assert gm.neighbours(8, "exponential")[0] == [1, 2, 4, 6, 7]
  assert gm.neighbours(4, "full")[2] == [0, 1, 3]
  with pytest.raises(ValueError, match="topology"):
    gm.neighbours(4, "star")


def test_denser_graphs_mix_faster():
  gaps = [gm.spectral_gap(gm.mixing_matrix(16, t)) for t in ("ring", "torus", "exponential")]
  assert gaps[0] < gaps[1] < gaps[2]
  assert gm.spectral_gap(gm.mixing_matrix(8, "full", "uniform")) == pytest.approx(1.0)


@pytest.mark.parametrize("topology", gm.TOPOLOGIES)
def test_a_gossip_step_preserves_the_average_exactly(topology):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(8, 50))
  w = gm.mixing_matrix(8, topology)
  np.testing.assert_allclose(gm.gossip_step(x, w).mean(axis=0), x.mean(axis=0),
                             rtol=0, atol=1e-13)


@pytest.mark.parametrize("topology", ["ring", "torus", "exponential"])
def test_repeated_mixing_converges_at_the_rate_the_spectral_gap_predicts(topology):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(12, 30))
  w = gm.mixing_matrix(12, topology)
  lam = gm.second_eigenvalue(w)
  dev0 = np.linalg.norm(x - x.mean(0))
  ratios = []
  for t in range(1, 41):
    prev = np.linalg.norm(x - x.mean(0))
    x = gm.gossip_step(x, w)
    dev = np.linalg.norm(x - x.mean(0))
    assert dev <= lam ** t * dev0 * (1 + 1e-9)  # the bound holds at every step
    ratios.append(dev / prev)
  assert ratios[-1] == pytest.approx(lam, rel=0.05)  # and the asymptotic rate is lambda_2


def test_consensus_distance():
  x = np.array([[1.0, 0.0], [3.0, 0.0]])
  assert gm.consensus_distance(x) == pytest.approx(1.0 / 2.0)
  assert gm.consensus_distance(np.ones((3, 4))) == 0.0


@pytest.mark.parametrize("n", [2, 4, 8, 16])
def test_one_peer_exponential_graph_averages_exactly_in_log2_n_steps(n):
  assert gm.one_peer_phases(n) == max(1, int(np.log2(n)))
  for t in range(2 * gm.one_peer_phases(n)):
    w = gm.one_peer_matrix(n, t)
    np.testing.assert_allclose(w.sum(axis=0), 1.0)  # one peer in, one out: doubly
    np.testing.assert_allclose(w.sum(axis=1), 1.0)  # stochastic, the average is kept
    assert (np.count_nonzero(w, axis=1) == 2).all()   # self and exactly one peer
    shift = 2 ** (t % gm.one_peer_phases(n)) % n
    assert all(w[i, (i - shift) % n] == 0.5 for i in range(n))
  # After one period every replica is the average of all: W = 11^T / n.
  np.testing.assert_allclose(gm.period_matrix(n), np.full((n, n), 1 / n), atol=1e-15)
  assert gm.spectral_gap(gm.mixing_matrix(n, gm.ONE_PEER_EXP)) == pytest.approx(1.0)
  assert gm.neighbours(8, gm.ONE_PEER_EXP)[0] == [1, 2, 4, 6, 7]  # met over a period
