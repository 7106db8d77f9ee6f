"""TFJob manifests for each approach (structure only; no cluster is contacted)."""

import io

import pytest

from launch import k8s


@pytest.mark.parametrize("approach,replicas", [
    ("allreduce", {"Worker": 3}), ("gossip", {"Worker": 3}),
    ("ps", {"Chief": 1, "Worker": 3, "PS": 2}), ("fedavg", {"Chief": 1, "Worker": 3})])
def test_replicas_follow_the_launcher_plan(approach, replicas):
  job = k8s.tfjob("j", approach, 3, "img:1", ["--epochs=2"], num_ps=2, gpus_per_worker=1)
  assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "TFJob"
  specs = job["spec"]["tfReplicaSpecs"]
  assert {k: v["replicas"] for k, v in specs.items()} == replicas
  assert "Evaluator" not in specs
  for kind, spec in specs.items():
    (container,) = spec["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # where the operator injects TF_CONFIG
    assert container["command"][:3] == ["python", "-m", k8s.approaches.get(approach).trainer]
    assert "--epochs=2" in container["command"]
    # A restarted pod resumes (all-reduce's BackupAndRestore needs no flag).
    assert ("--resume" in container["command"]) == (approach != "allreduce")
    gpus = container["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus == (None if kind == "PS" else 1)
    env = {e["name"]: e["value"] for e in container["env"]}
    assert (env.get("GRPC_FAIL_FAST") == "use_caller") == (approach == "ps")


def test_yaml_output_and_usage_errors(capsys):
  out = io.StringIO()
  assert k8s.main(["k8s", "--approach=ps", "--image=reg/tfdist:0.1", "--", "--ps_mode=sync"],
                  out=out) == 0
  text = out.getvalue()
  assert text.startswith('apiVersion: "kubeflow.org/v1"\nkind: "TFJob"\n')
  assert '    PS:\n      replicas: 1\n' in text and '- "--ps_mode=sync"' in text
  assert k8s.main(["k8s", "--approach=ps"]) == 2  # no image
  assert k8s.main(["k8s", "--image=x", "--", "--bogus=1"]) == 2
  assert len(capsys.readouterr().err.strip().splitlines()) == 2


def test_to_yaml_block_style():
  assert k8s.to_yaml({"a": 1, "b": ["x", {"c": True}], "d": {}}) == \
      'a: 1\nb:\n  - "x"\n  - c: true\nd: {}'
