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
    assert gpus == (None if kind == "PS" else "1")
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


# The Training Operator's replica restart policies (kubeflow.org/v1 RestartPolicy).
RESTART_POLICIES = ("Always", "OnFailure", "Never", "ExitCode")


@pytest.mark.parametrize("approach", ["allreduce", "ps", "gossip", "fedavg"])
def test_manifest_is_a_valid_tfjob_for_the_kubeflow_training_sdk(approach):
  """The manifest deserializes into the kubeflow-training SDK's TFJob model (its
  client-side validation on: required fields present, types right) and serializes
  back to exactly itself, so no field is unknown or misspelt; the YAML text parses to
  the same object."""
  # Pinned in requirements.lock (its test block): a missing one is a broken venv, and
  # fails here rather than skipping.
  from kubeflow.training import api_client as sdk  # pylint: disable=g-import-not-at-top
  import yaml  # pylint: disable=g-import-not-at-top
  job = k8s.tfjob("tfdist-x", approach, 2, "reg/tfdist:0.1", ["--epochs=1"], num_ps=1,
                  gpus_per_worker=1)
  api = sdk.ApiClient()
  model = api._ApiClient__deserialize(job, "KubeflowOrgV1TFJob")  # pylint: disable=protected-access
  assert api.sanitize_for_serialization(model) == job
  for spec in model.spec.tf_replica_specs.values():
    assert spec.restart_policy in RESTART_POLICIES
  assert yaml.safe_load(k8s.to_yaml(job)) == job


def test_the_sdk_check_catches_a_broken_manifest():
  from kubeflow.training import api_client as sdk  # pylint: disable=g-import-not-at-top
  job = k8s.tfjob("tfdist-x", "allreduce", 2, "reg/tfdist:0.1", [])
  del job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["name"]
  with pytest.raises(ValueError, match="name"):
    sdk.ApiClient()._ApiClient__deserialize(job, "KubeflowOrgV1TFJob")  # pylint: disable=protected-access
  job = k8s.tfjob("tfdist-x", "allreduce", 2, "reg/tfdist:0.1", [])
  job["spec"]["tfReplicaSpecs"]["Worker"]["replicaz"] = 2  # a misspelt field
  api = sdk.ApiClient()
  model = api._ApiClient__deserialize(job, "KubeflowOrgV1TFJob")  # pylint: disable=protected-access
  assert api.sanitize_for_serialization(model) != job


def test_a_users_program_in_every_replica():
  out = io.StringIO()
  assert k8s.main(["k8s", "--approach=ps", "--image=reg/x:1", "train.py", "--epochs=1"],
                  out=out) == 0
  assert '- "python"\n' in out.getvalue() and '- "train.py"\n' in out.getvalue()
  job = k8s.tfjob("j", "allreduce", 2, "img", [], program=["python", "-m", "pkg.train"])
  (container,) = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
  assert container["command"] == ["python", "-m", "pkg.train"]
