"""The gossip exchange: x_i <- sum_j W_ij x_j, over TF collectives between processes.

One collective group per edge of the topology (one group of everyone for `full`),
run by TF's collective runtime over gRPC between the processes of TF_CONFIG: each
worker sends only to its neighbours. The weighted sum is taken in one canonical id
order on every worker, so workers that hold the same vectors compute bit-identical
results. The mixing matrix W comes from mixing.py; `gather` is injectable, so the
bookkeeping is tested in one process with a table standing in for the peers.
"""

from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from tensorflow.python.ops import collective_ops  # pylint: disable=g-direct-tensorflow-import

from trainers.common import volume
from trainers.gossip import mixing as mixing_lib

# Collective keys well above the ones MultiWorkerMirroredStrategy hands out itself.
GROUP_KEY_BASE, ALL_GROUP_KEY, ONE_PEER_KEY_BASE = 100_000, 99_999, 500_000
INSTANCE_PARAMS, INSTANCE_GRADS, INSTANCE_MEASURE = 200_000, 300_000, 400_000

# gather(vector, my_id, group_key, members, instance_key) -> every member's
# [id, *vector] row, sorted by id.
Gather = Callable[[tf.Tensor, int, int, Sequence[int], int], tf.Tensor]
# send(vector, group_key, instance_key) to the other member of a two-member group;
# recv(like, group_key, instance_key) -> its vector.
Send = Callable[[tf.Tensor, int, int], tf.Tensor]
Recv = Callable[[tf.Tensor, int, int], tf.Tensor]


def collective_send(vector, group_key: int, instance_key: int) -> tf.Tensor:
  """One-way: `vector` to the other member of a two-member group (a broadcast)."""
  return collective_ops.broadcast_send_v2(vector, group_size=2, group_key=group_key,
                                          instance_key=instance_key)


def collective_recv(like, group_key: int, instance_key: int) -> tf.Tensor:
  return collective_ops.broadcast_recv_v2(tf.shape(like), like.dtype, group_size=2,
                                          group_key=group_key, instance_key=instance_key)


def collective_gather(vector, me: int, group_key: int, members: Sequence[int],
                      instance_key: int) -> tf.Tensor:
  """All-gather of [me, *vector] over the group's members (TF's collective runtime)."""
  payload = tf.concat([[tf.cast(me, tf.float32)], vector], 0)[None]
  rows = collective_ops.all_gather_v2(payload, group_size=len(members), group_key=group_key,
                                      instance_key=instance_key, communication_hint="ring")
  return tf.gather(rows, tf.argsort(rows[:, 0]))


def exchange_groups(n: int, topology: str) -> list[tuple[int, tuple[int, ...]]]:
  """(group key, members) of every collective group the exchange uses: one per edge,
  or a single group of everyone for the full topology."""
  if topology == "full":
    return [(GROUP_KEY_BASE, tuple(range(n)))] if n > 1 else []
  nbrs = mixing_lib.neighbours(n, topology)
  edges = sorted({(min(i, j), max(i, j)) for i in range(n) for j in nbrs[i]})
  return [(GROUP_KEY_BASE + 1 + k, e) for k, e in enumerate(edges)]


class NeighbourExchange:
  """Worker `me`'s side of the gossip: mixing with its neighbours, and a gather of
  every worker (measurements and barriers only, never counted as gossip traffic)."""

  def __init__(self, me: int, n: int, topology: str, mixing: str,
               gather: Gather = collective_gather, send: Send = collective_send,
               recv: Recv = collective_recv):
    self.me, self.n, self.gather, self.send, self.recv = me, n, gather, send, recv
    self.topology = topology
    self.one_peer = topology == mixing_lib.ONE_PEER_EXP
    self.w = mixing_lib.mixing_matrix(n, topology, mixing)
    self.neighbours = mixing_lib.neighbours(n, topology)[me]
    self.groups = [(k, m) for k, m in exchange_groups(n, topology) if me in m]
    # Canonical order (self included) so every worker sums identically-ordered terms.
    self.mix_ids = sorted(set(self.neighbours) | {me})
    self.mix_weights = tf.constant([self.w[me, j] for j in self.mix_ids], tf.float32)

  @property
  def degree(self) -> int:
    """Peers this worker sends to per exchange."""
    return (1 if self.n > 1 else 0) if self.one_peer else len(self.neighbours)

  @property
  def degrees(self) -> list[int]:
    """Peers every worker sends to per exchange (self.degree is this worker's)."""
    if self.one_peer:
      return [self.degree] * self.n
    return [len(x) for x in mixing_lib.neighbours(self.n, self.topology)]

  @property
  def phases(self) -> int:
    """Distinct exchanges in turn (one_peer_exp: log2 n shifts; else 1)."""
    return mixing_lib.one_peer_phases(self.n) if self.one_peer else 1

  def payload_bytes(self, num_params: int) -> int:
    """Bytes this worker sends per exchange: its vector (+ its id) to each neighbour;
    one_peer_exp: its vector, to one peer."""
    return self.degree * volume.model_bytes(num_params + (0 if self.one_peer else 1))

  def one_peer_keys(self, phase: int) -> tuple[int, int, int, int]:
    """(send-to, recv-from, send group key, recv group key) at `phase`: one group per
    directed edge, keyed by its sender."""
    shift = mixing_lib.one_peer_shift(self.n, phase)
    to, frm = (self.me + shift) % self.n, (self.me - shift) % self.n
    base = ONE_PEER_KEY_BASE + phase * self.n
    return to, frm, base + self.me, base + frm

  def mix_one_peer(self, vector: tf.Tensor, instance_base: int, phase: int) -> tf.Tensor:
    """x_i <- (x_i + x_{i-s}) / 2, s = 2^phase: send to i + s, receive from i - s.
    Sending blocks until the peer receives, so a worker whose bit `phase` is 0 sends
    first and one whose bit is 1 receives first: every send meets a waiting receive
    (adding s flips bit `phase`), and no cycle of waits can form."""
    _, _, send_key, recv_key = self.one_peer_keys(phase)
    # Instance keys must agree between an edge's two ends: derive them from its group.
    instance = lambda key: instance_base + 50_000 + key - ONE_PEER_KEY_BASE
    if (self.me >> phase) & 1 == 0:
      sent = self.send(vector, send_key, instance(send_key))
      with tf.control_dependencies([sent]):
        theirs = self.recv(vector, recv_key, instance(recv_key))
    else:
      theirs = self.recv(vector, recv_key, instance(recv_key))
      with tf.control_dependencies([theirs]):
        sent = self.send(vector, send_key, instance(send_key))
      with tf.control_dependencies([sent]):
        theirs = tf.identity(theirs)
    return (vector + theirs) / 2

  def mix(self, vector: tf.Tensor, instance_base: int, phase: int = 0) -> tf.Tensor:
    """sum_j W_ij x_j over self and neighbours: the gossip exchange (collectives only)."""
    if self.one_peer:
      return self.mix_one_peer(vector, instance_base, phase) if self.n > 1 else vector
    if not self.groups:
      return vector
    received = {self.me: vector}
    for group_key, members in self.groups:
      # Instance keys must agree across a group's members: derive them from the group.
      rows = self.gather(vector, self.me, group_key, members,
                         instance_base + group_key - GROUP_KEY_BASE)
      for pos, j in enumerate(members):  # rows are sorted by id, members too
        if j != self.me:
          received[j] = rows[pos, 1:]
    stacked = tf.stack([received[j] for j in self.mix_ids])
    return tf.linalg.matvec(stacked, self.mix_weights, transpose_a=True)

  def gather_all(self, vector: tf.Tensor, key: int) -> tf.Tensor:
    """Every worker's vector, as rows in id order. `key` names the call site: a
    collective instance must have the same shape on every use."""
    if self.n == 1:
      return vector[None]
    return self.gather(vector, self.me, ALL_GROUP_KEY, tuple(range(self.n)),
                       INSTANCE_MEASURE + key)[:, 1:]


class Flat:
  """A list of variables as one flat vector and back (what the exchange sends)."""

  def __init__(self, variables: Sequence[tf.Variable]):
    self.shapes = [v.shape for v in variables]
    self.sizes = [int(np.prod(s)) for s in self.shapes]

  @property
  def size(self) -> int:
    return sum(self.sizes)

  def flatten(self, tensors) -> tf.Tensor:
    return tf.concat([tf.reshape(t, [-1]) for t in tensors], 0)

  def unflatten(self, flat) -> list[tf.Tensor]:
    return [tf.reshape(p, s) for p, s in zip(tf.split(flat, self.sizes), self.shapes)]
