"""Probe (issue 32): one FedAvg round as TFF's MapReduceForm, in one process, with the
kernels TF picks from TF_ENABLE_ONEDNN_OPTS: where the mapreduce backend's round time goes.

    TF_ENABLE_ONEDNN_OPTS=1 python docs/probe_mapreduce_round.py mlp [LANES]
    TF_ENABLE_ONEDNN_OPTS=0 python docs/probe_mapreduce_round.py mlp [LANES]

Writes the 100 IID clients of MNIST to a temporary directory, builds the round graph
for 10 clients (E=1, B=10, 6,000 examples) on this process's CPU, LANES of them trained
at once (default 1; 10: all at once), and prints six round times (the first includes
grappler and the graph's set-up).
"""

import os
import sys
import tempfile
import time

import tensorflow as tf

from models.registry import build_model
from trainers.common import config as config_lib
from trainers.federated import clients as clients_lib
from trainers.federated import config as fed_config
from trainers.federated import federation, mapreduce, trainer


def main(model: str, lanes: int) -> None:
  run_dir = tempfile.mkdtemp()
  config = fed_config.Config(train=config_lib.TrainConfig(
      approach="fedavg", model=model, run_dir=run_dir,
      data_dir=os.environ.get("TFDS_DATA_DIR")))
  trainer.write_clients(config, 0, 0)
  ids = list(range(0, 100, 10))
  args = federation.client_args(run_dir, [ids], 0,
                                {k: clients_lib.client_seed(42, 1, k) for k in ids})
  process = trainer.build_process(lambda: build_model(model), federation.element_spec(),
                                  config)._process  # pylint: disable=protected-access
  form = mapreduce.form_of(process)
  state = mapreduce.packed(mapreduce._run_graph(form.initialize),  # pylint: disable=protected-access
                           process.initialize.type_signature.result.member)
  graph = mapreduce.RoundGraph(form, "/cpu:0", ["/cpu:0"], len(ids),
                               federation.client_pipeline(10, 1), lanes=lanes)
  session = tf.compat.v1.Session(graph=graph.graph)
  times = []
  for _ in range(6):
    start = time.perf_counter()
    session.run(graph.init)
    session.run(graph.outputs, graph.feed(state, [args]))
    times.append(time.perf_counter() - start)
  onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default")
  print(f"{model}, {lanes} lane(s), TF_ENABLE_ONEDNN_OPTS={onednn}:"
        f" round s {', '.join(f'{t:.2f}' for t in times)}")


if __name__ == "__main__":
  main(sys.argv[1] if len(sys.argv) > 1 else "mlp",
       int(sys.argv[2]) if len(sys.argv) > 2 else 1)
