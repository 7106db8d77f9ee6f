"""Checks made before any task starts: each problem is one ValueError whose message
names the flag, the value and the fix (the launcher prints it and exits 2).

Pure checks (host names, counts) and the few probes of this machine that a plan
depends on (a port is free, an address is ours, a directory is writable, a data
set is prepared) live here, apart from planning and from spawning.
"""

import errno
import ipaddress
import json
import os
import re
import socket
import tempfile
from typing import Iterable, Sequence

from cluster.tf_config import host_of, port_of
from trainers.common.flags import SYNTHETIC, resolve_data_dir

OVERSUBSCRIBE_FACTOR = 4  # tasks per core on one host before we call it a mistake
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_host_name(host: str, flag: str = "--hosts") -> None:
  """An IPv4/IPv6 address or an RFC 1123 host name."""
  try:
    ipaddress.ip_address(host)
    return
  except ValueError:
    pass
  labels = host.split(".")
  if labels[-1].isdigit() or not all(_HOST_LABEL.match(label) for label in labels):
    raise ValueError(f"{flag}: {host!r} is neither an IP address nor a host name")


def check_timeout(timeout: float | None) -> None:
  if timeout is not None and timeout <= 0:
    raise ValueError(f"--timeout must be > 0 seconds, got {timeout:g} (leave it out for no "
                     "timeout)")


def check_oversubscription(tasks_per_host: dict[str, int], cores: int, allowed: bool) -> None:
  """More than OVERSUBSCRIBE_FACTOR tasks per core on one host is refused unless allowed."""
  for host, count in tasks_per_host.items():
    if count > cores * OVERSUBSCRIBE_FACTOR and not allowed:
      raise ValueError(f"{count} tasks on {host}, which has {cores} core(s): more than "
                       f"{OVERSUBSCRIBE_FACTOR} per core; lower --num_workers or pass "
                       "--allow_oversubscribe")


def check_ours(address: str) -> None:
  """--this_host must be an address of this machine (we can bind it)."""
  try:
    with socket.socket(_family(address), socket.SOCK_STREAM) as s:
      s.bind((address, 0))
  except OSError as e:
    raise ValueError(f"--this_host={address} is not an address of this machine "
                     f"({e.strerror}); give one of its own addresses") from e


def check_ports_free(tasks: Iterable[tuple[str, str]]) -> None:
  """Every (task name, host:port) can be listened on now (TF binds it a moment later)."""
  for name, address in tasks:
    host, port = host_of(address), port_of(address)
    try:
      with socket.socket(_family(host), socket.SOCK_STREAM) as s:
        s.bind((host, port))
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise ValueError(f"port {port} of {name} ({address}) is already in use; free it or "
                         "choose another --port_base") from e
      raise ValueError(f"{name} cannot listen on {address}: {e.strerror}") from e


def check_writable(run_dir: str) -> None:
  """The run directory exists (created if need be) and takes a file."""
  try:
    os.makedirs(run_dir, exist_ok=True)
    with tempfile.TemporaryFile(dir=run_dir):
      pass
  except OSError as e:
    raise ValueError(f"--run_dir={run_dir} cannot be written ({e.strerror}); choose "
                     "another directory") from e


def prepared_num_examples(dataset: str, split: str, data_dir: str | None,
                          environ=os.environ) -> int | None:
  """A prepared split's size from its dataset_info.json (no TensorFlow); None when
  the file does not say."""
  root = os.path.join(resolve_data_dir(data_dir, environ), dataset.split(":")[0])
  for version in sorted(_listdir(root), reverse=True):
    try:
      with open(os.path.join(root, version, "dataset_info.json")) as f:
        info = json.load(f)
    except (OSError, ValueError):
      continue
    for s in info.get("splits", ()):
      if s.get("name") == split and s.get("shardLengths"):
        return sum(int(n) for n in s["shardLengths"])
  return None


def check_dataset(dataset: str, data_dir: str | None, environ=os.environ) -> None:
  """A TFDS data set is prepared where the trainers will look (TFDS's layout:
  <data_dir>/<name>/<version>/dataset_info.json); TF is not needed to tell."""
  if dataset == SYNTHETIC:
    return
  root = resolve_data_dir(data_dir, environ)
  folder = os.path.join(root, dataset.split(":")[0].split("/")[0])
  versions = [v for v in _listdir(folder)
              if os.path.exists(os.path.join(folder, v, "dataset_info.json"))]
  if not versions:
    raise ValueError(f"--dataset={dataset}: not prepared in {root} and this "
                     "machine cannot download it; point --data_dir (or TFDS_DATA_DIR) at a "
                     f"directory holding {dataset}/<version>/, e.g. "
                     "../shared/data/tensorflow_datasets")


def _listdir(path: str) -> Sequence[str]:
  try:
    return os.listdir(path)
  except OSError:
    return ()


def _family(host: str) -> int:
  return socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
