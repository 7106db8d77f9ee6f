"""Capped links between the tasks of one local job (--link=RATE).

Every task runs in a network namespace of its own, `tfd<launcher pid>-<k>`, with one
interface `eth0` at 10.213.0.<k+1>/24. The other end of its veth pair, `v<k>`, sits
on a bridge `br0` inside one more namespace, `tfd<launcher pid>-br`, so nothing is
created in the host's own namespace and nothing can leave the test subnet: the bridge
has no uplink. A `tbf` qdisc caps both directions of each task's link: on `eth0` (what
the task sends) and on `v<k>` (what it receives). The kernel here has tbf but no netem:
rates can be capped, delay cannot be added.

Planning (names, addresses, the ip/tc command lines) is pure; `create`, `destroy`,
`counters` and `remove_stale` run `ip`/`tc`. Deleting a task's namespace deletes its
veth pair with it; deleting the bridge's namespace deletes the bridge. The veth
counters (`counters`) are a second measure of each task's bytes on the wire, beside
the task shim's: they count frames, so Ethernet/IP/TCP headers and ACKs too.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
from typing import Sequence

SUBNET = "10.213.0"  # a /24 that exists only inside the namespaces below
PREFIX = "tfd"
PORT = 20000  # every task has a namespace of its own: one port fits all
_NAME = re.compile(rf"^{PREFIX}(\d+)-(br|\d+)$")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$")
_UNITS = {"bit": 1, "kbit": 10 ** 3, "mbit": 10 ** 6, "gbit": 10 ** 9}


class LinkError(RuntimeError):
  """The links could not be set up (a missing tool, no root, a qdisc refused)."""


def parse_rate(text: str) -> int:
  """'100mbit' -> 100_000_000 bits/s (tc's units: bit, kbit, mbit, gbit)."""
  m = _RATE.match(text.strip().lower())
  if not m or float(m.group(1)) <= 0:
    raise ValueError(f"--link must be a rate such as 10mbit, 100mbit or 1gbit, got {text!r}")
  bps = int(float(m.group(1)) * _UNITS[m.group(2)])
  if not 10_000 <= bps <= 100 * 10 ** 9:
    raise ValueError(f"--link={text} is outside 10kbit..100gbit")
  return bps


def burst_bytes(rate_bps: int) -> int:
  """tbf's bucket: 5 ms at the rate, at least 64 KiB (a GSO super-packet fits)."""
  return max(64 * 1024, rate_bps // 8 // 200)


@dataclasses.dataclass(frozen=True)
class Link:
  task: str       # "worker:1"
  netns: str      # its namespace
  address: str    # its IPv4 address inside it
  bridge_port: str  # its veth end on the bridge


@dataclasses.dataclass(frozen=True)
class Links:
  rate_bps: int
  bridge_netns: str
  links: tuple[Link, ...]

  def by_task(self) -> dict[str, Link]:
    return {l.task: l for l in self.links}

  def namespaces(self) -> list[str]:
    return [l.netns for l in self.links] + [self.bridge_netns]

  def describe(self) -> str:
    return (f"links: {self.rate_bps / 1e6:g} Mbit/s each way per task (tbf), bridge in "
            f"netns {self.bridge_netns}, subnet {SUBNET}.0/24")


def plan(task_names: Sequence[str], rate_bps: int, owner_pid: int) -> Links:
  """Pure: a namespace, address and bridge port for every task, in order."""
  if len(task_names) > 250:
    raise ValueError(f"--link supports up to 250 tasks, got {len(task_names)}")
  tag = f"{PREFIX}{owner_pid}"
  return Links(rate_bps, f"{tag}-br", tuple(
      Link(name, f"{tag}-{k}", f"{SUBNET}.{k + 1}", f"v{k}")
      for k, name in enumerate(task_names)))


def setup_commands(links: Links) -> list[list[str]]:
  """Pure: the ip/tc command lines that build `links`, in order."""
  br = links.bridge_netns
  rate, burst = f"{links.rate_bps}bit", str(burst_bytes(links.rate_bps))
  tbf = ["tbf", "rate", rate, "burst", burst, "latency", "100ms"]
  cmds = [["ip", "netns", "add", br],
          ["ip", "-n", br, "link", "set", "lo", "up"],
          ["ip", "-n", br, "link", "add", "br0", "type", "bridge"],
          ["ip", "-n", br, "link", "set", "br0", "up"]]
  for l in links.links:
    cmds += [["ip", "netns", "add", l.netns],
             ["ip", "-n", l.netns, "link", "set", "lo", "up"],
             ["ip", "-n", br, "link", "add", l.bridge_port, "type", "veth", "peer", "name",
              "eth0", "netns", l.netns],
             ["ip", "-n", br, "link", "set", l.bridge_port, "master", "br0", "up"],
             ["ip", "-n", l.netns, "addr", "add", f"{l.address}/24", "dev", "eth0"],
             ["ip", "-n", l.netns, "link", "set", "eth0", "up"],
             # Both directions: what the task sends leaves eth0, what it receives
             # leaves the bridge through v<k>.
             ["ip", "netns", "exec", l.netns, "tc", "qdisc", "add", "dev", "eth0", "root",
              *tbf],
             ["ip", "netns", "exec", br, "tc", "qdisc", "add", "dev", l.bridge_port, "root",
              *tbf]]
  return cmds


def missing() -> str | None:
  """What this machine lacks for --link (None: nothing)."""
  if os.geteuid() != 0:
    return "--link needs root (it creates network namespaces); run as root or drop --link"
  for tool in ("ip", "tc"):
    if shutil.which(tool) is None:
      return f"--link needs `{tool}` (iproute2), which is not on PATH"
  return None


def _run(cmd: list[str]) -> None:
  done = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if done.returncode != 0:
    raise LinkError(f"`{' '.join(cmd)}` failed: {done.stderr.strip() or done.returncode}")


def create(links: Links) -> None:
  """Builds the namespaces, bridge, veths and qdiscs; on a failure removes what was
  built and raises LinkError."""
  try:
    for cmd in setup_commands(links):
      _run(cmd)
  except LinkError:
    destroy(links)
    raise


def destroy(links: Links) -> None:
  """Removes every namespace of `links` (their veths and bridge go with them). Never
  raises: it runs on every exit path."""
  delete_namespaces(links.namespaces())


def delete_namespaces(names: Sequence[str]) -> None:
  present = set(list_namespaces())
  for name in names:
    if name in present:
      subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


def list_namespaces() -> list[str]:
  done = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
  return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def stale(names: Sequence[str], alive) -> list[str]:
  """Pure: the namespaces of ours (tfd<pid>-…) whose launcher `alive(pid)` says is gone."""
  out = []
  for name in names:
    m = _NAME.match(name)
    if m and not alive(int(m.group(1))):
      out.append(name)
  return out


def pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
    return True
  except ProcessLookupError:
    return False
  except PermissionError:
    return True


def remove_stale() -> list[str]:
  """Deletes the namespaces a launcher killed with SIGKILL left behind; returns them."""
  names = stale(list_namespaces(), pid_alive)
  delete_namespaces(names)
  return names


def counters(links: Links) -> dict[str, dict[str, int]]:
  """task -> {"sent": bytes, "received": bytes} from the bridge side of its veth (what
  the bridge received from the task is what the task sent)."""
  done = subprocess.run(["ip", "-n", links.bridge_netns, "-s", "-j", "link", "show"],
                        capture_output=True, text=True, check=False)
  if done.returncode != 0:
    return {}
  stats = {i["ifname"]: i.get("stats64", {}) for i in json.loads(done.stdout or "[]")}
  out = {}
  for l in links.links:
    s = stats.get(l.bridge_port)
    if s:
      out[l.task] = {"sent": int(s["rx"]["bytes"]), "received": int(s["tx"]["bytes"])}
  return out
