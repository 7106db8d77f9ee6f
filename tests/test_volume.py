"""The analytic volumes, by hand."""

from trainers.common import volume


def test_ring_allreduce_sends_two_n_minus_one_over_n_models_per_step():
  assert volume.ring_allreduce(1000, 4, 10) == 2 * 3 / 4 * 4000 * 10
  assert volume.ring_allreduce(1000, 1, 10) == 0.0


def test_ps_gossip_and_fedavg():
  assert volume.parameter_server(1000, 7.5) == 4000 * 7.5
  assert volume.gossip(1000, 2, 3) == 4000 * 2 * 3
  # FedAvg per executor service: the model in and one partial aggregate out per round
  # it served (3 and 2 rounds here), whatever number of clients it trained.
  assert volume.fedavg(1000, rounds_served=[3, 2], clients_served=[17, 13]) == 4000 * 2.5
  # SCAFFOLD: two models each way per round, and each client's variate out and back.
  assert volume.fedavg_service(1000, 3, 17, messages=2, client_messages=1) == 4000 * 23


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
  # FedAvg, 3 rounds, 2 services that served 3 and 2 of them: each service takes the
  # model and returns one partial aggregate per round it served; the chief the sum.
  fed = volume.fedavg_tasks(1000, [3, 2], [17, 13], 2)
  assert fed["worker:0"] == {"sent": 12_000.0, "received": 12_000.0}
  assert fed["worker:1"] == {"sent": 8_000.0, "received": 8_000.0}
  assert fed["chief:0"] == {"sent": 20_000.0, "received": 20_000.0}
  # In process the chief's private service is the chief's task: both ends count there.
  assert volume.fedavg_tasks(1000, [3], [30], 0) == {"chief:0": {"sent": 24_000.0,
                                                                 "received": 24_000.0}}
  assert volume.fedavg_tasks(1000, [1], [10], 1, messages=2)["chief:0"]["sent"] == 8_000.0


def test_per_client_uploads_send_the_model_once_per_node_and_every_clients_weights_back():
  # Two nodes; node 0 took part in 3 rounds with 5 clients, node 1 in 2 with 3.
  got = volume.per_client_upload_tasks(100, [3, 2], [5, 3])
  assert got["worker:0"] == {"sent": 5 * 400.0, "received": 3 * 400.0}
  assert got["worker:1"] == {"sent": 3 * 400.0, "received": 2 * 400.0}
  assert got["chief:0"] == {"sent": 5 * 400.0, "received": 8 * 400.0}
