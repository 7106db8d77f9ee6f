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


def test_every_tasks_link_by_approach():
  """The whole job's analytic bytes, per task, by hand (model of 1000 floats = 4000 B)."""
  ring = volume.ring_allreduce_tasks(1000, 4, 10)
  assert ring == {f"worker:{i}": {"sent": 60_000.0, "received": 60_000.0} for i in range(4)}
  # PS, 2 workers of 5 steps each, the model split 600/400 over two ps: each ps takes its
  # share of all 10 pushes and serves its share of all 10 pulls.
  ps = volume.parameter_server_tasks(1000, 2, 5, {"ps:0": 600, "ps:1": 400})
  assert ps["worker:1"] == {"sent": 20_000.0, "received": 20_000.0}
  assert ps["ps:0"] == {"sent": 24_000.0, "received": 24_000.0}
  assert ps["ps:1"] == {"sent": 16_000.0, "received": 16_000.0}
  assert volume.gossip_tasks(1000, [2, 1], 3) == {
      "worker:0": {"sent": 24_000.0, "received": 24_000.0},
      "worker:1": {"sent": 12_000.0, "received": 12_000.0}}
  # FedAvg, 10 clients a round, 3 rounds, 2 services: the chief sends 30 models and
  # receives 30 updates with their 4-byte weights; each service the reverse, halved.
  fed = volume.fedavg_tasks(1000, 10, 3, 2)
  assert fed["chief:0"] == {"sent": 120_000.0, "received": 120_120.0}
  assert fed["worker:0"] == {"sent": 60_060.0, "received": 60_000.0}
  assert volume.fedavg_tasks(1000, 10, 3, 0) == {"chief:0": {"sent": 240_120.0,
                                                             "received": 240_120.0}}
  assert volume.fedavg_tasks(1000, 10, 1, 1, messages=2)["chief:0"]["sent"] == 80_000.0
