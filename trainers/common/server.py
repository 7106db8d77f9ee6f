"""A task that only serves TF's gRPC runtime: the parameter server's worker and ps tasks,
FedAvg's mapreduce services. It runs no Python of ours while it serves; the chief (or
the launcher) ends it."""

import tensorflow as tf

from cluster.tf_config import TaskInfo
from trainers.common import lifecycle


def serve(task: TaskInfo, tag: str) -> None:
  """Serves the cluster of TF_CONFIG as `task` until stopped; never returns."""
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  server = tf.distribute.Server(resolver.cluster_spec(), job_name=task.task_type,
                                task_index=task.task_index, protocol="grpc", start=True)
  print(f"[{tag}] {task.name} serving at {task.address}", flush=True)
  lifecycle.honour_sigterm(grace_s=0.5)  # join() blocks in C++: the watcher ends us
  server.join()
