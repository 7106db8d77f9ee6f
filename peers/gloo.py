"""Horovod's Gloo rendezvous for a job the suite's launcher started (pure but for
`serve`): every task of TF_CONFIG's "worker" role is one Horovod rank, and worker 0's
address (free: no TF server runs there) serves Horovod's rendezvous, which
`horovodrun --gloo` would otherwise start in a process of its own."""

import dataclasses
from typing import Sequence

from cluster.tf_config import host_of, port_of


@dataclasses.dataclass(frozen=True)
class Slot:
  """One rank's place, as Horovod's SlotInfo (runner/common/util/hosts.py)."""
  hostname: str
  rank: int
  local_rank: int
  cross_rank: int
  size: int
  local_size: int
  cross_size: int


def slots(workers: Sequence[str]) -> list[Slot]:
  """Rank r = worker task r (the launcher's order). local_rank counts the ranks on the
  same host before it; cross_rank counts the hosts with a rank of the same local_rank
  before it (Horovod's definitions)."""
  hosts = [host_of(a) for a in workers]
  local = [hosts[:r].count(h) for r, h in enumerate(hosts)]
  out = []
  for r, h in enumerate(hosts):
    peers = [hosts[k] for k in range(len(hosts)) if local[k] == local[r]]
    distinct = list(dict.fromkeys(peers))
    out.append(Slot(h, r, local[r], distinct.index(h), len(hosts), hosts.count(h),
                    len(distinct)))
  return out


def env(workers: Sequence[str], rank: int, iface: str) -> dict[str, str]:
  """The variables `horovodrun --gloo` gives rank `rank` (runner/gloo_run.py), with the
  rendezvous at worker 0's address."""
  s = slots(workers)[rank]
  return {"HOROVOD_GLOO_RENDEZVOUS_ADDR": host_of(workers[0]),
          "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port_of(workers[0])),
          "HOROVOD_CONTROLLER": "gloo", "HOROVOD_CPU_OPERATIONS": "gloo",
          "HOROVOD_GLOO_IFACE": iface, "HOROVOD_HOSTNAME": s.hostname,
          "HOROVOD_RANK": str(s.rank), "HOROVOD_SIZE": str(s.size),
          "HOROVOD_LOCAL_RANK": str(s.local_rank), "HOROVOD_LOCAL_SIZE": str(s.local_size),
          "HOROVOD_CROSS_RANK": str(s.cross_rank), "HOROVOD_CROSS_SIZE": str(s.cross_size)}


def iface_of(address: str) -> str:
  """The network interface that holds this task's address (Gloo binds there)."""
  import socket  # pylint: disable=g-import-not-at-top
  import psutil  # pylint: disable=g-import-not-at-top
  ip = socket.gethostbyname(host_of(address))
  for name, addrs in psutil.net_if_addrs().items():
    if any(a.address == ip for a in addrs):
      return name
  raise ValueError(f"no network interface holds {ip} ({address})")


def serve(workers: Sequence[str]):
  """Worker 0: Horovod's rendezvous (an HTTP key-value store that also hands each
  rank its slot) on worker 0's address, in a thread; returns a stop() function."""
  import threading  # pylint: disable=g-import-not-at-top
  from horovod.runner.common.util import hosts as hvd_hosts  # pylint: disable=g-import-not-at-top
  from horovod.runner.http import http_server  # pylint: disable=g-import-not-at-top
  plan = [hvd_hosts.SlotInfo(**dataclasses.asdict(s)) for s in slots(workers)]
  httpd = http_server.RendezvousHTTPServer(
      (host_of(workers[0]), port_of(workers[0])), http_server.RendezvousHandler, 0)
  httpd.init(plan)
  thread = threading.Thread(target=httpd.serve_forever, name="hvd-rendezvous", daemon=True)
  thread.start()

  def stop() -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join()
  return stop
