"""The approaches: one frozen record each, and the comparison's variants of them.

This is the only module that names an approach. The launcher plans tasks from a
record (roles, which role the job waits for, which deaths it survives, what
environment every task needs, whether a restart passes --resume); the trainers,
k8s, Slurm and the experiments look the same record up by name.
"""

import dataclasses
from typing import Mapping

from cluster.errors import ConfigError

# Roles that compute gradients (and so get a GPU when there are any).
COMPUTE_ROLES = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Approach:
  """What the launcher and the trainers need to know about one approach."""
  name: str
  trainer: str                       # module every task runs: python -m <trainer>
  has_chief: bool = False            # a chief task runs the loop (PS coordinator, FedAvg server)
  has_ps: bool = False               # parameter-server tasks hold the variables
  min_workers: int = 1
  primary_roles: tuple[str, ...] = ("worker",)  # the job waits for these; others are servers
  tolerated_roles: tuple[str, ...] = ()         # roles whose death the job survives
  takes_resume_flag: bool = True     # restarts add --resume (all-reduce resumes by itself)
  env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # for every task
  fault_roles: tuple[str, ...] = ("chief", "worker", "ps")  # --fail_task can crash these
  fault_note: str = ""               # why the others cannot be
  # The training set is split among the worker tasks (summary.json then shows each
  # worker's label histogram); FedAvg's workers serve clients, split per client.
  worker_partitions: bool = True

  def roles(self, num_workers: int, num_ps: int = 0) -> dict[str, int]:
    """Role -> task count, in the order tasks are planned (chief, worker, ps)."""
    if num_workers < self.min_workers:
      raise ConfigError(f"--num_workers must be >= {self.min_workers} for {self.name}, "
                        f"got {num_workers}")
    if self.has_ps and num_ps < 1:
      raise ConfigError(f"--num_ps must be >= 1, got {num_ps}")
    roles = {"chief": int(self.has_chief), "worker": num_workers,
             "ps": num_ps if self.has_ps else 0}
    return {r: n for r, n in roles.items() if n > 0}


ALLREDUCE = Approach("allreduce", "trainers.allreduce", takes_resume_flag=False)
PS = Approach(
    "ps", "trainers.ps", has_chief=True, has_ps=True,
    primary_roles=("chief",),
    # The coordinator re-schedules a dead worker's closures on the others.
    tolerated_roles=("worker",),
    # Required by ParameterServerStrategy: RPCs to a dead task fail instead of
    # retrying forever, so the coordinator can re-schedule around it.
    env={"GRPC_FAIL_FAST": "use_caller"})
GOSSIP = Approach("gossip", "trainers.gossip")
# The chief runs the FedAvg rounds; workers are TFF executor services (none: in-process).
FEDAVG = Approach("fedavg", "trainers.federated", has_chief=True, min_workers=0,
                  primary_roles=("chief",), fault_roles=("chief",), worker_partitions=False,
                  fault_note="its workers are TFF's C++ executor services")

APPROACHES: Mapping[str, Approach] = {a.name: a for a in (ALLREDUCE, PS, GOSSIP, FEDAVG)}


def get(name: str) -> Approach:
  if name not in APPROACHES:
    raise ConfigError(f"--approach must be one of {', '.join(APPROACHES)}; got {name!r}")
  return APPROACHES[name]


AT_ONCE, IN_TURN = "at once", "in turn"  # how a variant uses its busiest link per unit


@dataclasses.dataclass(frozen=True)
class Variant:
  """One entry of the comparison: an approach with the trainer flags that make it so."""
  name: str
  approach: Approach
  trainer_args: tuple[str, ...] = ()
  examples_per_step_is_per_worker: bool = False  # one step = one worker's batch (PS async)
  # How its busiest link is used per unit of work (the cost model): both ways at once,
  # or in turn (push, then pull); and what a unit is.
  link_pattern: str = AT_ONCE
  unit: str = "step"


# Each variant a constant, for code that treats one specially (the cost model's
# formulas): referred to by the object, never by its position or a spelled name.
ALLREDUCE_V = Variant("allreduce", ALLREDUCE)
PS_ASYNC_V = Variant("ps_async", PS, ("--ps_mode=async",), examples_per_step_is_per_worker=True,
                     unit="worker step")
PS_SYNC_V = Variant("ps_sync", PS, ("--ps_mode=sync",), link_pattern=IN_TURN)
GOSSIP_V = Variant("gossip", GOSSIP)
GOSSIP_ASYNC_V = Variant("gossip_async", GOSSIP, ("--gossip_mode=async",), unit="job step")
FEDAVG_V = Variant("fedavg", FEDAVG, link_pattern=IN_TURN, unit="round")
VARIANTS: Mapping[str, Variant] = {v.name: v for v in (
    ALLREDUCE_V, PS_ASYNC_V, PS_SYNC_V, GOSSIP_V, GOSSIP_ASYNC_V, FEDAVG_V)}


def variant(name: str) -> Variant:
  if name not in VARIANTS:
    raise ConfigError(f"unknown approach {name!r}; valid: {', '.join(VARIANTS)}")
  return VARIANTS[name]
