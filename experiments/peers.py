"""The peers' rows: Flower's FedAvg and Horovod's all-reduce on the suite's work (pure
planning; the programs are peers/, their environment `.venv-peers`, `make peers`).

A peer's run is derived from the suite's run it stands beside: the same launcher
flags (cluster shape, workers, timeout, a regime's links and straggler) and the same
trainer flags (model, data, seed, budget, target, evaluation cadence), given to the
peer's program instead of the suite's trainer. So the two rows differ only in who
runs the algorithm.
"""

import dataclasses
import os
from typing import Sequence

from cluster import approaches
from experiments import runspec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(REPO, ".venv-peers")


@dataclasses.dataclass(frozen=True)
class Peer:
  name: str                    # its row
  beside: approaches.Variant   # the suite's row it is compared with
  module: str                  # its program (python -m)
  what: str


FLOWER = Peer("flower_fedavg", approaches.FEDAVG_V, "peers.flower_fedavg",
              "Flower 1.23 FedAvg: its gRPC server on the chief, one long-lived client "
              "node per worker serving the clients it holds")
HOROVOD = Peer("horovod_allreduce", approaches.ALLREDUCE_V, "peers.horovod_allreduce",
               "Horovod 0.28.1 all-reduce over Gloo, one rank per worker")
PEERS = {p.name: p for p in (FLOWER, HOROVOD)}


def python(venv: str = VENV) -> str:
  return os.path.join(venv, "bin", "python")


def missing(venv: str = VENV) -> str | None:
  """One line naming the fix when the peers' environment is not there; else None."""
  if os.path.exists(os.path.join(venv, ".installed")) and os.access(python(venv), os.X_OK):
    return None
  return (f"the peers' environment is not built ({venv}); run `make peers` (Flower and "
          "Horovod, requirements-peers.lock; Horovod's wheel builds once, a few minutes)")


def beside(peer: Peer, suite: runspec.RunSpec, venv: str = VENV,
           run_dir: str | None = None) -> runspec.RunSpec:
  """The peer's run on `suite`'s work, in `run_dir` (default: where the suite run's
  directory is, under the peer's name: root/<peer>, or root/<peer>/seed_<k>)."""
  if run_dir is None:
    suite_dir = suite.run_dir.rstrip(os.sep)
    if suite.seed is None:  # root/<variant>
      run_dir = os.path.join(os.path.dirname(suite_dir), peer.name)
    else:                   # root/<variant>/seed_<k>
      run_dir = os.path.join(os.path.dirname(os.path.dirname(suite_dir)), peer.name,
                             os.path.basename(suite_dir))
  return dataclasses.replace(
      suite, name=peer.name, run_dir=run_dir, trainer_args=(),
      program=(python(venv), "-m", peer.module, f"--run_dir={run_dir}",
               *suite.trainer_args),
      description=f"{peer.what}; {suite.description}")


def specs_beside(suite_runs: Sequence[runspec.RunSpec], chosen: Sequence[Peer],
                 venv: str = VENV) -> list[runspec.RunSpec]:
  """Each chosen peer's run beside every suite run of the variant it stands beside."""
  return [beside(p, s, venv) for p in chosen for s in suite_runs if s.name == p.beside.name]


def parse(names: Sequence[str]) -> list[Peer]:
  """['all'] or peer names -> peers; ValueError naming a bad one."""
  if list(names) in (["all"], []):
    return list(PEERS.values())
  bad = [n for n in names if n not in PEERS]
  if bad:
    raise ValueError(f"--peers: unknown {', '.join(bad)}; valid: all, {', '.join(PEERS)}")
  return [PEERS[n] for n in names]
