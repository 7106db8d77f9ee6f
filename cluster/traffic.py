"""Measured bytes on the wire: reading what the task shim counted (no TF, no processes).

The launcher preloads launch/task_shim.c into every task with TFDIST_TRAFFIC_DIR
(<run_dir>/traffic) and TFDIST_TASK (e.g. worker:1). Each process of a task (the
trainer, and TFF's worker_binary under it) writes <task>.<pid>.json there with the
bytes it sent and received over TCP, every 0.5 s while it talks and at exit.
A task's traffic is the sum over its processes (and over restarts: what the job
took). The counts are what the process handed to / took from the kernel on TCP
sockets: payload plus gRPC and HTTP/2 framing and every control RPC, without
TCP/IP headers.
"""

import ctypes
import json
import os
import statistics
from typing import Iterable, Mapping

from cluster.tf_config import role_of

DIR_NAME = "traffic"
ENV_DIR, ENV_TASK = "TFDIST_TRAFFIC_DIR", "TFDIST_TASK"

Totals = dict[str, dict[str, int]]  # task -> {"sent", "received", "processes"}


def traffic_dir(run_dir: str) -> str:
  return os.path.join(run_dir, DIR_NAME)


def start_fresh(directory: str) -> None:
  """An empty count directory for a new launch (created, or cleared of an earlier
  launch's count files)."""
  os.makedirs(directory, exist_ok=True)
  for name in os.listdir(directory):
    if name.endswith((".json", ".json.tmp")):
      try:
        os.remove(os.path.join(directory, name))
      except FileNotFoundError:
        pass


def read(directory: str | None) -> Totals:
  """task -> summed counters of its processes; {} if nothing was counted."""
  totals: Totals = {}
  if not directory or not os.path.isdir(directory):
    return totals
  for name in sorted(os.listdir(directory)):
    if not name.endswith(".json"):
      continue
    task = name[:-len(".json")].rpartition(".")[0]
    try:
      with open(os.path.join(directory, name)) as f:
        counts = json.load(f)
    except (OSError, ValueError):
      continue  # replaced while we read it: the next read has it
    t = totals.setdefault(task, {"sent": 0, "received": 0, "processes": 0})
    t["sent"] += int(counts["sent"])
    t["received"] += int(counts["received"])
    t["processes"] += 1
  return totals


def per_role(totals: Mapping[str, Mapping[str, int]], roles: Iterable[str] = ("worker",)
             ) -> tuple[float | None, float | None]:
  """(mean bytes sent, mean bytes received) over the tasks of `roles`; (None, None)
  when none of them was counted."""
  roles = tuple(roles)
  rows = [v for k, v in totals.items() if role_of(k) in roles]
  if not rows:
    return None, None
  return (statistics.fmean(r["sent"] for r in rows),
          statistics.fmean(r["received"] for r in rows))


def summary_fields(totals: Mapping[str, Mapping[str, int]],
                   analytic: Mapping[str, Mapping[str, float]] | None = None) -> dict:
  """The measured-traffic fields of summary.json, per worker and for the whole job,
  each beside the algorithm's own (`analytic`: task -> sent, received) where given."""
  sent, received = per_role(totals)
  by_task = {k: {"sent": v["sent"], "received": v["received"]} for k, v in totals.items()}
  return {"bytes_sent_per_worker": sent, "bytes_received_per_worker": received,
          "bytes_by_task": by_task, "bytes_measured": bool(totals),
          **job_fields(by_task, analytic or {})}


def _load(row: Mapping[str, float]) -> float:
  return row["sent"] + row["received"]


def busiest(by_task: Mapping[str, Mapping[str, float]]) -> str | None:
  """The task whose link carried the most (sent + received): on a thin link its
  link sets the time."""
  return max(sorted(by_task), key=lambda k: _load(by_task[k])) if by_task else None


def job_fields(measured: Mapping[str, Mapping[str, float]],
               analytic: Mapping[str, Mapping[str, float]]) -> dict:
  """The whole job: total bytes sent (every task; what one task sends another
  receives), the busiest task (measured; analytic when nothing was measured) and its
  sent + received, each beside the analytic value (None where unknown)."""
  task = busiest(measured) or busiest(analytic)
  total = lambda rows: sum(r["sent"] for r in rows.values()) if rows else None
  return {"busiest_task": task,
          "bytes_busiest_task": _load(measured[task]) if task in measured else None,
          "bytes_analytic_busiest_task": _load(analytic[task]) if task in analytic else None,
          "bytes_total_sent": total(measured), "bytes_analytic_total_sent": total(analytic),
          "bytes_analytic_by_task": dict(analytic) or None}


def own_counters() -> tuple[int, int] | None:
  """(sent, received) of this process so far, when the shim is preloaded; else None."""
  try:
    fn = ctypes.CDLL(None).tfdist_traffic
  except (OSError, AttributeError):
    return None
  sent, received = ctypes.c_uint64(), ctypes.c_uint64()
  fn(ctypes.byref(sent), ctypes.byref(received))
  return sent.value, received.value
