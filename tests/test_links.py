"""Capped links (--link): planning, the tbf cap on a real TCP transfer between two of
the namespaces, and that nothing of ours survives (namespaces, hence veths and bridge)."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from launch import links

needs_root = pytest.mark.skipif(links.missing() is not None,
                                reason=str(links.missing()))


def test_rates_parse_and_bad_ones_are_refused():
  assert links.parse_rate("10mbit") == 10_000_000
  assert links.parse_rate("1gbit") == 10 ** 9
  assert links.parse_rate("2.5Mbit") == 2_500_000
  for bad in ("fast", "10", "10mb", "-1mbit", "0mbit", "1bit"):
    with pytest.raises(ValueError, match="--link"):
      links.parse_rate(bad)


def test_plan_gives_each_task_a_namespace_address_and_bridge_port():
  plan = links.plan(["chief:0", "worker:0", "worker:1"], 10_000_000, 4242)
  assert [l.netns for l in plan.links] == ["tfd4242-0", "tfd4242-1", "tfd4242-2"]
  assert [l.address for l in plan.links] == ["10.213.0.1", "10.213.0.2", "10.213.0.3"]
  assert plan.bridge_netns == "tfd4242-br"
  assert plan.namespaces() == ["tfd4242-0", "tfd4242-1", "tfd4242-2", "tfd4242-br"]
  cmds = [" ".join(c) for c in links.setup_commands(plan)]
  # Both directions of every link are capped; nothing is made outside our namespaces.
  assert sum("tc qdisc add dev eth0 root tbf rate 10000000bit" in c for c in cmds) == 3
  assert sum("tc qdisc add dev v" in c for c in cmds) == 3
  assert all(c.startswith(("ip netns add tfd4242-", "ip -n tfd4242-",
                           "ip netns exec tfd4242-")) for c in cmds)


def test_stale_namespaces_are_those_of_dead_launchers_only():
  names = ["tfd11-0", "tfd11-br", "tfd22-0", "other-ns", "tfdx-0", "tfd33-br"]
  assert links.stale(names, alive=lambda pid: pid == 22) == ["tfd11-0", "tfd11-br",
                                                             "tfd33-br"]


_SERVER = textwrap.dedent("""
    import socket, sys, time
    s = socket.socket(); s.bind((sys.argv[1], 5001)); s.listen(1)
    print("ready", flush=True)
    c, _ = s.accept(); n = 0; t0 = None
    while True:
      b = c.recv(1 << 16)
      if not b: break
      if t0 is None: t0 = time.monotonic()
      n += len(b)
    print(n, time.monotonic() - t0, flush=True)
""")
_CLIENT = textwrap.dedent("""
    import socket, sys, time
    c = socket.create_connection((sys.argv[1], 5001), timeout=30)
    end = time.monotonic() + float(sys.argv[2]); chunk = b"x" * (1 << 16)
    while time.monotonic() < end: c.sendall(chunk)
    c.close()
""")


def _in_ns(ns: str, code: str, *args: str) -> subprocess.Popen:
  return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", code, *args],
                          stdout=subprocess.PIPE, text=True)


@needs_root
@pytest.mark.parametrize("rate", ["20mbit", "5mbit"])
def test_tbf_caps_a_tcp_transfer_between_two_namespaces(rate):
  plan = links.plan(["a:0", "b:0"], links.parse_rate(rate), os.getpid())
  links.create(plan)
  try:
    server = _in_ns(plan.links[1].netns, _SERVER, plan.links[1].address)
    assert server.stdout.readline().strip() == "ready"
    client = _in_ns(plan.links[0].netns, _CLIENT, plan.links[1].address, "3")
    client.wait(timeout=60)
    received, seconds = server.communicate(timeout=60)[0].split()
    mbit = int(received) * 8 / float(seconds) / 1e6
    assert abs(mbit / (plan.rate_bps / 1e6) - 1) <= 0.2, (mbit, rate)
    counted = links.counters(plan)
    # The veth counters see the payload plus headers (and the other side's ACKs).
    assert int(received) <= counted["a:0"]["sent"] <= int(received) * 1.1 + 100_000
    # What one end sent the other received, up to neighbour discovery and drops at a cap.
    assert counted["b:0"]["received"] == pytest.approx(counted["a:0"]["sent"], rel=0.01)
  finally:
    links.destroy(plan)
  assert not set(plan.namespaces()) & set(links.list_namespaces())


@needs_root
def test_stale_namespaces_of_a_killed_owner_are_removed():
  # An owner pid that cannot be alive: pid_max is below 2**22 + 1 on Linux.
  plan = links.plan(["a:0"], 10_000_000, 2 ** 22 + 1)
  links.create(plan)
  assert set(plan.namespaces()) <= set(links.list_namespaces())
  removed = links.remove_stale()
  assert set(plan.namespaces()) <= set(removed)
  assert not set(plan.namespaces()) & set(links.list_namespaces())
