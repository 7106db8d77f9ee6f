"""The federation inside TFF: a round takes each sampled client's file name (clients.py)
and its round seed, and the executor service that owns the client reads, decodes,
shuffles and batches the client's examples itself, inside TFF's worker_binary. The
chief never holds a training example.

    round(state@SERVER, <path, seed, slot>@CLIENTS)
      = (process.next(state, federated_map(client_data, args)),       # the algorithm
         federated_sum(federated_map(score, <broadcast(weights), args>)))  # per client

`score` is the broadcast model's loss and accuracy on each sampled client's own
examples, written into row `slot` of a (clients this round) x 3 table, so the sum
at the server is every client's row: the per-client curves, without the data.
"""

import collections

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from trainers.common import data, model
from trainers.federated import clients as clients_lib

# A client's shuffle buffer: larger than any client's examples (a buffer larger than
# the data shuffles the whole client, like the in-memory pipeline's len(client)).
SHUFFLE_BUFFER = 1 << 16
SCORE_BATCH = 1000
CLIENT_ARG = tff.StructType([("path", np.str_), ("seed", np.int64), ("slot", np.int32)])


def element_spec():
  """What a client's training batches look like (the process's input spec)."""
  return (tf.TensorSpec((None,) + data.IMAGE_SHAPE, tf.float32),
          tf.TensorSpec((None,), tf.int32))


def read_client(path) -> tf.data.Dataset:
  """(uint8 image, int32 label) of one client file (clients.records' layout)."""
  def decode(record):
    raw = tf.io.decode_raw(record, tf.uint8)
    return tf.reshape(raw[1:], data.IMAGE_SHAPE), tf.cast(raw[0], tf.int32)
  return tf.data.FixedLengthRecordDataset(path, clients_lib.RECORD_BYTES).map(decode)


def client_pipeline(batch_size: int, epochs: int):
  """(path, seed) -> the client's E epochs of B-sized batches, reshuffled each epoch
  from its round seed (clients.client_dataset's pipeline, read where it lives); both
  backends read their clients through it."""
  def pipeline(path, seed) -> tf.data.Dataset:
    return data.batched(read_client(path), SHUFFLE_BUFFER, batch_size, seed, repeat=epochs,
                        drop_remainder=False)
  return pipeline


def client_data(batch_size: int, epochs: int) -> tff.Computation:
  """<path, seed, slot> -> client_pipeline's dataset, as a TFF computation."""
  pipeline = client_pipeline(batch_size, epochs)

  @tff.tensorflow.computation(CLIENT_ARG)
  def make(arg):
    return pipeline(arg.path, arg.seed)
  return make


def scorer(model_fn, weights_type, slots: int) -> tff.Computation:
  """(model weights, <path, seed, slot>) -> a slots x 3 table, zero but for row `slot`:
  (summed loss, correct, examples) of the weights on the client's examples."""
  @tff.tensorflow.computation(weights_type, CLIENT_ARG)
  def score(weights, arg):
    keras_model = model_fn()
    variables = keras_model.trainable_variables + keras_model.non_trainable_variables
    values = list(weights[0]) + list(weights[1])
    with tf.control_dependencies([v.assign(w) for v, w in zip(variables, values)]):
      batches = read_client(arg.path).batch(SCORE_BATCH).map(data.standardize)

      def add(sums, batch):
        logits = keras_model(batch[0], training=False)
        return sums + tf.stack([tf.reduce_sum(model.per_example_loss(batch[1], logits)),
                                model.correct(batch[1], logits),
                                tf.cast(tf.size(batch[1]), tf.float32)])
      sums = batches.reduce(tf.zeros([3]), add)
    return tf.scatter_nd([[arg.slot]], [sums], [slots, 3])
  return score


def reading_clients(next_comp: tff.Computation, make_data: tff.Computation,
                    get_weights: tff.Computation, score: tff.Computation | None
                    ) -> tff.Computation:
  """`next_comp` (state@SERVER, datasets@CLIENTS[, more@CLIENTS]) with its datasets
  made on the clients from CLIENT_ARGs; returns (next's result, the score table), or
  next's result alone without `score`."""
  types = [t for _, t in tff.structure.iter_elements(next_comp.type_signature.parameter)]
  args_type = tff.FederatedType(CLIENT_ARG, tff.CLIENTS)

  def round_(state, args, *more):
    result = next_comp(state, tff.federated_map(make_data, args), *more)
    if score is None:
      return result
    return result, tff.federated_sum(tff.federated_map(score, (
        tff.federated_broadcast(tff.federated_map(get_weights, state)), args)))

  if len(types) == 2:
    return tff.federated_computation(lambda state, args: round_(state, args),
                                     types[0], args_type)
  return tff.federated_computation(lambda state, args, more: round_(state, args, more),
                                   types[0], args_type, types[2])


def client_args(run_dir: str, groups: list[list[int]], num_services: int, seeds: dict
                ) -> list[collections.OrderedDict]:
  """The round's CLIENT_ARGs, service by service (`groups`: clients.by_service), each
  client's slot its place in that order."""
  order = [k for group in groups for k in group]
  return [collections.OrderedDict(path=clients_lib.client_path(run_dir, k, num_services),
                                  seed=np.int64(seeds[k]), slot=np.int32(i))
          for i, k in enumerate(order)]


def client_scores(table: np.ndarray | None, order: list[int]) -> list[dict]:
  """Per-client records from the summed score table (rows in `order`); none without."""
  out = []
  if table is None:
    return out
  for k, (loss, hits, n) in zip(order, np.asarray(table)):
    out.append(dict(client=int(k), examples=int(n), loss=float(loss / max(n, 1)),
                    accuracy=float(hits / max(n, 1))))
  return out
