"""Kubernetes: write a Kubeflow `TFJob` manifest for any approach.

    python -m launch.k8s --approach=ps --num_workers=4 --num_ps=2 --image=REGISTRY/tfdist:0.1 \
        -- --ps_mode=sync --epochs=3 > job.yaml && kubectl apply -f job.yaml

The training operator creates one pod per replica and injects each pod's TF_CONFIG
(chief/worker/ps, the same contract as launch.local), so the trainers run unchanged.
Nothing here talks to a cluster.
"""

import json
import sys
from typing import Any

from absl import flags

from cluster import approaches, cli
from cluster.approaches import COMPUTE_ROLES
from launch import plan as planning
from launch import program as program_lib
from trainers import flags as trainer_flags

# launch.plan role -> TFJob replica type
_REPLICA_TYPES = {"chief": "Chief", "worker": "Worker", "ps": "PS"}
TF_PORT = 2222  # the operator's default tfjob-port


def tfjob(name: str, approach: str, num_workers: int, image: str, trainer_argv: list[str],
          num_ps: int = 1, namespace: str = "default", cpu: str = "2", memory: str = "4Gi",
          gpus_per_worker: int = 0, backoff_limit: int = 3, run_dir: str = "/runs",
          program: list[str] | None = None) -> dict:
  """Pure: the TFJob as a dict (roles from the approach's record, as launch.local plans
  them). `program`: a user's program in every replica instead of the suite's trainer
  (the image's `python` runs a .py script)."""
  record = approaches.get(approach)
  roles = record.roles(num_workers, num_ps)
  env = [{"name": k, "value": v} for k, v in record.env.items()]
  env.append({"name": "PYTHONUNBUFFERED", "value": "1"})
  specs = {}
  for role, count in roles.items():
    limits: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus_per_worker and role in COMPUTE_ROLES:
      limits["nvidia.com/gpu"] = str(gpus_per_worker)  # a quantity: a string
    container = {
        "name": "tensorflow",  # the operator injects TF_CONFIG into this container
        "image": image,
        # Any pod start may be a restart: resume from the run dir's checkpoints
        # (a first start finds none and starts afresh). run_dir must be a shared volume.
        "command": (list(program_lib.program_argv(program, "python")) if program else
                    ["python", "-m", record.trainer, f"--run_dir={run_dir}/{name}",
                     *planning.attempt_argv(approach, trainer_argv, attempt=1)]),
        "env": env,
        "ports": [{"name": "tfjob-port", "containerPort": TF_PORT}],
        "resources": {"limits": limits},
    }
    # PS workers may die and come back (the coordinator tolerates it); others restart
    # the job through the operator's backoff.
    restart = "OnFailure" if role in record.tolerated_roles else "ExitCode"
    specs[_REPLICA_TYPES[role]] = {"replicas": count, "restartPolicy": restart,
                                   "template": {"spec": {"containers": [container]}}}
  return {
      "apiVersion": "kubeflow.org/v1", "kind": "TFJob",
      "metadata": {"name": name, "namespace": namespace},
      "spec": {"runPolicy": {"cleanPodPolicy": "Running", "backoffLimit": backoff_limit},
               "tfReplicaSpecs": specs},
  }


def to_yaml(obj: Any, indent: int = 0) -> str:
  """Block-style YAML for dicts, lists and scalars (strings JSON-quoted: always valid)."""
  pad = "  " * indent
  if isinstance(obj, dict):
    lines = []
    for k, v in obj.items():
      if isinstance(v, (dict, list)) and v:
        lines.append(f"{pad}{k}:\n{to_yaml(v, indent + 1)}")
      else:
        lines.append(f"{pad}{k}: {_scalar(v)}")
    return "\n".join(lines)
  if isinstance(obj, list):
    lines = []
    for v in obj:
      if isinstance(v, (dict, list)) and v:
        body = to_yaml(v, indent + 1).lstrip()
        lines.append(f"{pad}- {body}")
      else:
        lines.append(f"{pad}- {_scalar(v)}")
    return "\n".join(lines)
  return pad + _scalar(obj)


def _scalar(v: Any) -> str:
  if isinstance(v, bool):
    return "true" if v else "false"
  if isinstance(v, (int, float)):
    return str(v)
  if v is None:
    return "null"
  if isinstance(v, (dict, list)):
    return "{}" if isinstance(v, dict) else "[]"
  return json.dumps(str(v))


def main(argv: list[str] | None = None, out=sys.stdout) -> int:
  fv = flags.FlagValues()
  flags.DEFINE_enum("approach", approaches.ALLREDUCE.name, list(approaches.APPROACHES),
                    "Approach.",
                    flag_values=fv)
  flags.DEFINE_integer("num_workers", 2, "Worker replicas.", flag_values=fv)
  flags.DEFINE_integer("num_ps", 1, "PS replicas (approach=ps).", flag_values=fv)
  flags.DEFINE_string("name", None, "TFJob name (default tfdist-<approach>).", flag_values=fv)
  flags.DEFINE_string("namespace", "default", "Namespace.", flag_values=fv)
  flags.DEFINE_string("image", None, "Container image with this repo and its .venv.",
                      flag_values=fv)
  flags.DEFINE_string("cpu", "2", "CPU limit per replica.", flag_values=fv)
  flags.DEFINE_string("memory", "4Gi", "Memory limit per replica.", flag_values=fv)
  flags.DEFINE_integer("gpus_per_worker", 0, "nvidia.com/gpu per chief/worker replica.",
                       flag_values=fv)
  flags.DEFINE_integer("backoff_limit", 3, "Job restarts before the operator gives up.",
                       flag_values=fv)
  flags.DEFINE_string("run_dir", "/runs", "Run directory root inside the pods (mount a "
                      "shared volume there to keep outputs).", flag_values=fv)
  argv = sys.argv if argv is None else argv
  cli.exit_if_answered(argv, fv, cli.prog("launch.k8s"), __doc__)
  try:
    head, program, rest = program_lib.split_argv(argv, fv)
    fv(head)
    rest = rest or []
    if not fv.image:
      raise flags.Error("--image is required")
    if not program:
      trainer_flags.check_trainer_argv(fv.approach, rest)
    manifest = tfjob(fv.name or f"tfdist-{fv.approach}", fv.approach, fv.num_workers,
                     fv.image, rest, fv.num_ps, fv.namespace, fv.cpu, fv.memory,
                     fv.gpus_per_worker, fv.backoff_limit, fv.run_dir, program=program)
  except (flags.Error, ValueError) as e:
    print(f"{cli.prog('launch.k8s')}: error: {e}", file=sys.stderr)
    return 2
  out.write(to_yaml(manifest) + "\n")
  return 0


def run_main() -> None:
  """The console script's entry."""
  sys.exit(main())


if __name__ == "__main__":
  sys.exit(main())
