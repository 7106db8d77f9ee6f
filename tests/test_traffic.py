"""The byte counter (launch/task_shim.c, cluster/traffic.py) against known transfers:
real processes over loopback, the shim preloaded as the launcher does it."""

import os
import subprocess
import sys
import textwrap

import pytest

from cluster import traffic
from launch import shim


N = 3_000_000  # bytes the client sends; the server answers with N // 3

_SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
    print(s.getsockname()[1], flush=True)
    c, _ = s.accept()
    got = 0
    while got < {n}:
      got += len(c.recv(1 << 16))
    c.sendall(b"y" * ({n} // 3))
    c.close()
    with open("/dev/null", "w") as f:   # file I/O is not traffic
      f.write("z" * 100000)
""")

_CLIENT = textwrap.dedent("""
    import socket, sys
    c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    c.sendall(b"x" * {n})
    got = 0
    while got < {n} // 3:
      got += len(c.recv(1 << 16))
    c.close()
""")


def _env(tmp_path, task: str) -> dict:
  lib = shim.shim_path(str(tmp_path / "lib" / shim.LIB_NAME))
  if lib is None:
    pytest.skip("no C compiler")
  return {**os.environ, "LD_PRELOAD": lib, traffic.ENV_DIR: str(tmp_path / "traffic"),
          traffic.ENV_TASK: task}


def test_raw_tcp_transfer_is_counted_exactly_both_ways(tmp_path):
  (tmp_path / "traffic").mkdir()
  server = subprocess.Popen([sys.executable, "-c", _SERVER.format(n=N)], text=True,
                            stdout=subprocess.PIPE, env=_env(tmp_path, "server:0"))
  try:
    port = server.stdout.readline().strip()
    subprocess.run([sys.executable, "-c", _CLIENT.format(n=N), port], check=True,
                   env=_env(tmp_path, "client:0"), timeout=60)
    assert server.wait(timeout=60) == 0
  finally:
    server.kill()
    server.wait()
  totals = traffic.read(str(tmp_path / "traffic"))
  # Plain TCP has no framing: the counts are the bytes exactly.
  assert totals["client:0"] == {"sent": N, "received": N // 3, "processes": 1}
  assert totals["server:0"] == {"sent": N // 3, "received": N, "processes": 1}


def test_a_killed_process_has_its_counts_and_a_listed_local_port_is_not_counted(tmp_path):
  """The server is SIGKILLed (no exit handler runs, as when the launcher ends a
  worker_binary) a second after its last byte: the flusher thread has written its
  counts. The client connects to a port named in TFDIST_UNCOUNTED_PORTS (host-local
  plumbing, like the FedAvg chief's merge service): it counts nothing."""
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  (tmp_path / "traffic").mkdir()
  server = subprocess.Popen(
      [sys.executable, "-c", _SERVER.format(n=N) + "import time; time.sleep(600)"],
      text=True, stdout=subprocess.PIPE, env=_env(tmp_path, "server:0"))
  try:
    port = server.stdout.readline().strip()
    subprocess.run([sys.executable, "-c", _CLIENT.format(n=N), port], check=True,
                   env={**_env(tmp_path, "client:0"), "TFDIST_UNCOUNTED_PORTS": f"1,{port}"},
                   timeout=60)
    # The flusher writes every 0.5 s from inside a counted call: wait until the file
    # holds every byte (polled, bounded), then kill with no exit handler.
    deadline = time.monotonic() + 30
    while traffic.read(str(tmp_path / "traffic")).get("server:0", {}).get("received") != N:
      assert time.monotonic() < deadline, "the server's counts never reached its bytes"
      time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=60)
  finally:
    server.kill()
    server.wait()
  totals = traffic.read(str(tmp_path / "traffic"))
  assert totals["server:0"] == {"sent": N // 3, "received": N, "processes": 1}
  assert totals.get("client:0", {"sent": 0, "received": 0})["sent"] == 0
  assert totals.get("client:0", {"sent": 0, "received": 0})["received"] == 0


_GRPC_SERVER = textwrap.dedent("""
    import sys, time, grpc
    from concurrent import futures
    def handler(request, context):
      return b"y" * len(request)
    server = grpc.server(futures.ThreadPoolExecutor(2))
    rpc = grpc.method_handlers_generic_handler("t.T", {{"Echo": grpc.unary_unary_rpc_method_handler(handler)}})
    server.add_generic_rpc_handlers((rpc,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)
""")

_GRPC_CLIENT = textwrap.dedent("""
    import sys, grpc
    ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1],
                               options=[("grpc.max_receive_message_length", 1 << 26)])
    echo = ch.unary_unary("/t.T/Echo")
    for _ in range(4):
      assert len(echo(b"x" * ({n} // 4))) == {n} // 4
    ch.close()
""")


def test_grpc_transfer_is_counted_with_framing_within_a_bound(tmp_path):
  """gRPC adds HTTP/2 frames (9 bytes per frame of at most 16 KiB by default), the
  5-byte gRPC message prefix, headers and the connection's settings and pings. For
  a 3 MB exchange in 4 calls that is under 1 % + 16 KiB; the counter reports at
  least the payload and at most that much more."""
  (tmp_path / "traffic").mkdir()
  server = subprocess.Popen([sys.executable, "-c", _GRPC_SERVER.format()], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env=_env(tmp_path, "server:0"))
  try:
    port = server.stdout.readline().strip()
    subprocess.run([sys.executable, "-c", _GRPC_CLIENT.format(n=N), port], check=True,
                   env=_env(tmp_path, "client:0"), timeout=60)
    server.stdin.close()
    assert server.wait(timeout=60) == 0
  finally:
    server.kill()
    server.wait()
  totals = traffic.read(str(tmp_path / "traffic"))
  bound = N * 1.01 + 16384
  for task in ("client:0", "server:0"):
    assert N <= totals[task]["sent"] <= bound, totals
    assert N <= totals[task]["received"] <= bound, totals
  # What one side sent the other received (one connection, nothing else).
  assert totals["client:0"]["sent"] == totals["server:0"]["received"]
  assert totals["server:0"]["sent"] == totals["client:0"]["received"]


def test_reading_sums_processes_and_averages_workers(tmp_path):
  d = tmp_path / "t"
  d.mkdir()
  for name, sent, received in (("worker:0.11", 10, 20), ("worker:0.12", 5, 5),
                               ("worker:1.13", 30, 40), ("chief:0.14", 1, 2)):
    (d / f"{name}.json").write_text(f'{{"pid": 1, "sent": {sent}, "received": {received}}}')
  (d / "worker:1.15.json.tmp").write_text("half")
  totals = traffic.read(str(d))
  assert totals["worker:0"] == {"sent": 15, "received": 25, "processes": 2}
  assert traffic.per_role(totals) == (22.5, 32.5)
  assert traffic.per_role(totals, ("ps",)) == (None, None)
  assert traffic.read(str(tmp_path / "missing")) == {}
  fields = traffic.summary_fields(totals)
  assert fields["bytes_measured"] and fields["bytes_by_task"]["chief:0"] == {
      "sent": 1, "received": 2}
  # The whole job: worker:1 carried the most (70), the total is every task's sent.
  assert fields["busiest_task"] == "worker:1" and fields["bytes_busiest_task"] == 70
  assert fields["bytes_total_sent"] == 15 + 30 + 1
  assert fields["bytes_analytic_busiest_task"] is None  # no analytic given
  analytic = {"worker:0": {"sent": 10.0, "received": 10.0},
              "worker:1": {"sent": 35.0, "received": 35.0}}
  fields = traffic.summary_fields(totals, analytic)
  assert fields["bytes_analytic_busiest_task"] == 70.0
  assert fields["bytes_analytic_total_sent"] == 45.0
  # Nothing measured: the busiest task is the analytic one.
  assert traffic.job_fields({}, analytic)["busiest_task"] == "worker:1"


def test_own_counters_without_the_shim_is_none():
  if "LD_PRELOAD" not in os.environ:
    assert traffic.own_counters() is None


def test_a_new_launch_starts_its_counts_afresh(tmp_path):
  """A launch into a run directory that an earlier launch counted into (a --resume, a
  rerun) counts only its own bytes."""
  d = tmp_path / "traffic"
  d.mkdir()
  (d / "worker:0.123.json").write_text('{"pid": 123, "sent": 5, "received": 7}')
  assert traffic.read(str(d)) == {"worker:0": {"sent": 5, "received": 7, "processes": 1}}
  traffic.start_fresh(str(d))
  assert traffic.read(str(d)) == {} and d.is_dir()
