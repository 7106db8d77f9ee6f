"""The analytic volumes, by hand."""

from trainers.common import volume


def test_ring_allreduce_sends_two_n_minus_one_over_n_models_per_step():
  assert volume.ring_allreduce(1000, 4, 10) == 2 * 3 / 4 * 4000 * 10
  assert volume.ring_allreduce(1000, 1, 10) == 0.0


def test_ps_gossip_and_fedavg():
  assert volume.parameter_server(1000, 7.5) == 4000 * 7.5
  assert volume.gossip(1000, 2, 3) == 4000 * 2 * 3
  assert volume.fedavg(1000, clients_per_round=10, rounds=3, num_services=2) == 4000 * 15
  assert volume.fedavg(1000, 10, 3, 0) == 4000 * 30  # in-process: one service
