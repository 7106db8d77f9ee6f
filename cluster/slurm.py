"""Slurm: an srun task's TF_CONFIG from its environment, as a pure function.

The layout is TF's SlurmClusterResolver's (tensorflow/python/distribute/
cluster_resolver/slurm_cluster_resolver.py), written out here so it needs neither
TensorFlow nor its private fields: nodes in sorted-name order, each node's tasks on
consecutive ports from `port_base`, ranks dealt to roles in sorted role order
(chief, ps, worker), a node's GPUs divided evenly among its tasks.
"""

import dataclasses
import re
from typing import Mapping

from cluster.approaches import Approach
from cluster.errors import ConfigError
from cluster.tf_config import host_of, make_tf_config


@dataclasses.dataclass(frozen=True)
class SlurmTask:
  tf_config: str
  cuda_visible_devices: str  # '' when the node's GPUs are not divided here
  bind_address: str          # where this task's servers listen: its node


def expand_hostlist(hostlist: str) -> list[str]:
  """'node[01-02],gpu7' -> ['node01', 'node02', 'gpu7'] (Slurm's compressed form)."""
  parts, depth, cur = [], 0, ""
  for c in hostlist:
    depth += (c == "[") - (c == "]")
    if c == "," and depth == 0:
      parts.append(cur)
      cur = ""
    else:
      cur += c
  parts.append(cur)
  hosts = []
  for part in parts:
    m = re.fullmatch(r"([^,\[\]]+)(?:\[([^\]]+)\])?", part)
    if m is None:
      raise ConfigError(f"--cluster_resolver=slurm: bad node list {hostlist!r}")
    if m.group(2) is None:
      hosts.append(m.group(1))
      continue
    for rng in m.group(2).split(","):
      lo, _, hi = rng.partition("-")
      for i in range(int(lo), int(hi or lo) + 1):
        hosts.append(m.group(1) + str(i).zfill(len(lo)))
  return hosts


def expand_tasks_per_node(spec: str) -> list[int]:
  """'3(x2),1' -> [3, 3, 1] (SLURM_STEP_TASKS_PER_NODE)."""
  out = []
  for part in spec.split(","):
    m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part)
    if m is None:
      raise ConfigError(f"--cluster_resolver=slurm: bad tasks-per-node list {spec!r}")
    out += [int(m.group(1))] * int(m.group(2) or 1)
  return out


def slurm_roles(approach: Approach, num_tasks: int, num_ps: int = 1) -> dict[str, int]:
  """Role -> task count for an srun step: chief and ps as the approach needs them,
  every other task a worker."""
  servers = int(approach.has_chief) + (num_ps if approach.has_ps else 0)
  try:
    return approach.roles(num_tasks - servers, num_ps)
  except ConfigError as e:
    raise ConfigError(f"--cluster_resolver=slurm: approach {approach.name} with "
                      f"{num_tasks} srun task(s): {e}") from e


def resolve(environ: Mapping[str, str], approach: Approach, num_ps: int = 1,
            port_base: int = 8888, num_gpus: int = 0) -> SlurmTask:
  """This srun task's place in the job, from SLURM_PROCID, SLURM_STEP_NUM_TASKS,
  SLURM_STEP_NODELIST and SLURM_STEP_TASKS_PER_NODE. `num_gpus`: GPUs visible on
  each node to divide among its tasks (0: leave CUDA_VISIBLE_DEVICES alone)."""
  try:
    rank = int(environ["SLURM_PROCID"])
    num_tasks = int(environ["SLURM_STEP_NUM_TASKS"])
    hosts = expand_hostlist(environ["SLURM_STEP_NODELIST"])
    per_node = expand_tasks_per_node(environ["SLURM_STEP_TASKS_PER_NODE"])
  except (KeyError, ValueError) as e:
    raise ConfigError("--cluster_resolver=slurm outside an srun step: SLURM_PROCID, "
                      "SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST or "
                      "SLURM_STEP_TASKS_PER_NODE is missing (start the trainers with "
                      "srun; see launch/slurm/)") from e
  nodes = dict(zip(hosts, per_node))
  if sum(nodes.values()) != num_tasks:
    raise ConfigError(f"--cluster_resolver=slurm: {num_tasks} task(s) but the node list "
                      f"holds {sum(nodes.values())}")
  gpus_per_task = num_gpus // max(nodes.values()) if num_gpus else 0
  if num_gpus and gpus_per_task == 0:
    raise ConfigError(f"--cluster_resolver=slurm: {num_gpus} GPU(s) per node cannot be "
                      f"divided among {max(nodes.values())} task(s)")
  slots = [(f"{host}:{port_base + k}",
            ",".join(str(g) for g in range(k * gpus_per_task, (k + 1) * gpus_per_task)))
           for host, count in sorted(nodes.items()) for k in range(count)]
  cluster, mine, start = {}, None, 0
  for role, count in sorted(slurm_roles(approach, num_tasks, num_ps).items()):
    cluster[role] = tuple(address for address, _ in slots[start:start + count])
    if start <= rank < start + count:
      mine = (role, rank - start)
    start += count
  if mine is None:
    raise ConfigError(f"--cluster_resolver=slurm: rank {rank} is not below {num_tasks}")
  address, gpus = slots[rank]
  # Nodes are filled in sorted-name order; Slurm ranks follow its own node order.
  # Where they disagree the task would serve another node's address: refuse.
  node = environ.get("SLURMD_NODENAME")
  if node and host_of(address) != node:
    raise ConfigError(f"--cluster_resolver=slurm: rank {rank} runs on {node} but the "
                      f"layout places it ({mine[0]}:{mine[1]}) at {host_of(address)}; use "
                      "srun --distribution=block and a node list in sorted order")
  return SlurmTask(make_tf_config(cluster, *mine), gpus, host_of(address))
