"""Pure planning of each task's share of its host's cores (no processes, no environment).

N TensorFlow processes on one host each size their thread pools for the whole
machine, so N compute tasks oversubscribe it N times over and then pay for the
communication on top. On a real cluster every worker has its own cores; on one
host the launcher divides them:

  compute tasks (role "worker": they run the model's steps)
      intra-op threads = the host's cores / compute tasks on it (at least 1), or
      --threads_per_task;
  ps tasks
      1 intra-op thread: they apply updates while the workers compute;
  the chief (PS coordinator, FedAvg's server)
      every core of its host: it dispatches while the workers compute, and works
      (evaluation, per-client scoring, aggregation) while they wait, so it never
      competes with them for long, and its work is on the critical path;
  every task
      2 inter-op threads (a step's independent ops, input pipeline beside compute).

With `pin`, each compute task is bound to its own cores (consecutive, k each) and the
other tasks to the cores left over, or to all cores if none are left; it needs at
least as many cores as compute tasks.

The environment a task gets (TF reads TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS
as its default pool sizes; OMP_NUM_THREADS for any OpenMP kernel) is `env_for`;
the launcher applies the affinity at spawn time (os.sched_setaffinity).
"""

import dataclasses
from typing import Mapping, Sequence

from cluster.tf_config import role_of

COMPUTE_ROLE, CHIEF_ROLE = "worker", "chief"
INTER_OP_THREADS = 2


@dataclasses.dataclass(frozen=True)
class Share:
  """One task's CPU budget."""
  intra_op: int
  inter_op: int
  cpus: tuple[int, ...] = ()  # () = not pinned

  def env(self) -> dict[str, str]:
    return {"TF_NUM_INTRAOP_THREADS": str(self.intra_op),
            "TF_NUM_INTEROP_THREADS": str(self.inter_op),
            "OMP_NUM_THREADS": str(self.intra_op)}

  def describe(self) -> str:
    pinned = (f"cpus {_ranges(self.cpus)}" if self.cpus else "unpinned")
    return f"threads intra {self.intra_op} inter {self.inter_op}, {pinned}"


def assign(tasks: Sequence[str], cpu_ids: Sequence[int], threads_per_task: int | None = None,
           pin: bool = False) -> dict[str, Share]:
  """name -> Share for the tasks ("role:index") of one host whose usable cores are
  `cpu_ids` (e.g. os.sched_getaffinity(0)). Raises ValueError (one line) for a
  request that cannot be honoured."""
  ids = tuple(sorted(cpu_ids))
  cores = len(ids)
  if cores < 1:
    raise ValueError(f"a host needs at least one core, got {cores}")
  if threads_per_task is not None and threads_per_task < 1:
    raise ValueError(f"--threads_per_task must be >= 1, got {threads_per_task}")
  compute = [t for t in tasks if role_of(t) == COMPUTE_ROLE]
  light = [t for t in tasks if t not in compute]
  per_task = threads_per_task or max(1, cores // max(1, len(compute)))
  if pin and len(compute) > cores:
    raise ValueError(f"--pin_cpus needs at least one core per compute task: "
                     f"{len(compute)} on a host with {cores}")
  shares = {}
  for i, name in enumerate(compute):
    if pin and (i + 1) * per_task > cores:  # --threads_per_task asked for too many
      raise ValueError(f"--pin_cpus with --threads_per_task={per_task}: {len(compute)} "
                       f"compute task(s) need {len(compute) * per_task} cores, the host "
                       f"has {cores}")
    shares[name] = Share(per_task, INTER_OP_THREADS,
                         ids[i * per_task:(i + 1) * per_task] if pin else ())
  used = len(compute) * per_task if pin else 0
  spare = ids[used:] or ids
  for name in light:
    threads = cores if role_of(name) == CHIEF_ROLE else 1
    shares[name] = Share(threads_per_task or threads, INTER_OP_THREADS, spare if pin else ())
  return shares


def assign_hosts(tasks_by_host: Mapping[str, Sequence[str]], cpu_ids: Sequence[int],
                 threads_per_task: int | None = None, pin: bool = False) -> dict[str, Share]:
  """assign() on every host (each assumed to offer `cpu_ids`, as this one)."""
  out: dict[str, Share] = {}
  for names in tasks_by_host.values():
    out.update(assign(names, cpu_ids, threads_per_task, pin))
  return out


def _ranges(cpus: Sequence[int]) -> str:
  """(0, 1, 2, 5) -> "0-2,5"."""
  parts, start = [], None
  for i, c in enumerate(cpus):
    if start is None:
      start = c
    if i + 1 == len(cpus) or cpus[i + 1] != c + 1:
      parts.append(str(start) if start == c else f"{start}-{c}")
      start = None
  return ",".join(parts)
