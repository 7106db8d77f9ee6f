import json

import pytest

from cluster.errors import ConfigError
from cluster.tf_config import parse_tf_config


def test_absent_tf_config_is_a_single_worker_chief():
  task = parse_tf_config(None)
  assert task.num_workers == 1 and task.is_chief


def test_worker_zero_is_chief_without_a_chief_role():
  cluster = {"worker": ["localhost:1", "localhost:2"]}
  w0 = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
  w1 = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
  assert w0.is_chief and not w1.is_chief and w1.num_workers == 2 and w1.name == "worker:1"


def test_chief_role_owns_outputs():
  cluster = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3"]}
  w0 = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}))
  assert not w0.is_chief


@pytest.mark.parametrize("raw,match", [
    ("{not json", "not valid JSON"),
    ('{"cluster": []}', "must be"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "ps", "index": 0}}', "not a role"),
    ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker", "index": 3}}', "out of range"),
    ('{"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
])
def test_bad_tf_config_is_a_one_line_config_error(raw, match):
  with pytest.raises(ConfigError, match=match) as e:
    parse_tf_config(raw)
  assert "\n" not in str(e.value)


# --- the approach records and TF_CONFIG in one place (cluster/) ---

import ast  # noqa: E402
import importlib  # noqa: E402
import pathlib  # noqa: E402

from cluster import approaches  # noqa: E402
from cluster.tf_config import make_tf_config  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_tf_config_round_trips_through_the_one_builder_and_parser():
  cluster = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
  task = parse_tf_config(make_tf_config(cluster, "worker", 1))
  assert task.cluster == {r: tuple(a) for r, a in cluster.items()}
  assert task.name == "worker:1" and task.address == "h:3" and not task.is_chief


@pytest.mark.parametrize("name,roles", [
    ("allreduce", {"worker": 3}), ("gossip", {"worker": 3}),
    ("ps", {"chief": 1, "worker": 3, "ps": 2}), ("fedavg", {"chief": 1, "worker": 3})])
def test_each_record_plans_its_roles(name, roles):
  record = approaches.get(name)
  assert record.roles(3, 2) == roles
  assert importlib.util.find_spec(record.trainer) is not None
  assert set(record.primary_roles) <= {"chief", "worker"}


def test_every_approach_has_flags_and_every_variant_an_approach():
  from trainers import flags as trainer_flags  # pylint: disable=g-import-not-at-top
  assert set(trainer_flags.CONFIGS) == set(approaches.APPROACHES)  # pylint: disable=protected-access
  assert {v.approach.name for v in approaches.VARIANTS.values()} == set(approaches.APPROACHES)
  with pytest.raises(ConfigError, match="--approach must be one of allreduce, ps, gossip"):
    approaches.get("mirrored")


def _string_literals(path: pathlib.Path) -> set[str]:
  return {n.value for n in ast.walk(ast.parse(path.read_text()))
          if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_approach_names_are_spelled_in_cluster_approaches_only():
  names = set(approaches.APPROACHES) - {"ps"} | set(approaches.VARIANTS)  # "ps" is also a role
  offenders = {}
  for package in ("cluster", "launch", "trainers", "experiments", "models"):
    for path in (REPO / package).rglob("*.py"):
      if path.name == "approaches.py":
        continue
      found = names & _string_literals(path)
      if found:
        offenders[str(path.relative_to(REPO))] = sorted(found)
  assert not offenders


def test_the_bottom_of_the_house_imports_nothing_above_it():
  for path in list((REPO / "cluster").rglob("*.py")) + list((REPO / "trainers").rglob("*.py")) \
      + list((REPO / "models").rglob("*.py")):
    tree = ast.parse(path.read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    tops = {m.split(".")[0] for m in imported}
    above = {"launch", "experiments"} | ({"trainers", "models", "tensorflow"}
                                         if path.parts[-2] == "cluster" else set())
    assert not tops & above, f"{path.relative_to(REPO)} imports {sorted(tops & above)}"


# --- the house's architecture, over the import graph ---

PACKAGES = ("cluster", "launch", "trainers", "experiments", "models")
APPROACH_PACKAGES = ("trainers.allreduce", "trainers.ps", "trainers.gossip",
                     "trainers.federated")


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def import_graph() -> dict[str, set[str]]:
  """module -> the project modules it imports, anywhere in the file (function-level
  imports too: a circle hidden in a function is still a circle). `from a import b`
  is an edge to a.b when that is a module, else to a."""
  modules = _project_modules()
  graph = {}
  for name, path in modules.items():
    edges = set()
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules
                   else node.module for a in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One circle of the graph (its modules, first repeated last), or None."""
  state: dict[str, int] = {}  # 1: on the current path, 2: done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state and (found := visit(nxt)):
        return found
    path.pop()
    state[node] = 2
    return None

  for start in sorted(graph):
    if start not in state and (found := visit(start)):
      return found
  return None


def test_the_cycle_finder_finds_a_circle_and_only_a_circle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle_anywhere_in_the_project():
  graph = import_graph()
  assert "trainers.ps.config" in graph["trainers.flags"]  # the graph sees real edges
  assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_common_is_below_every_approach_and_approaches_below_nothing_of_each_other():
  graph = import_graph()
  for module, edges in graph.items():
    if module.startswith("trainers.common"):
      bad = {e for e in edges if e.startswith(APPROACH_PACKAGES) or e == "trainers.flags"}
      assert not bad, f"{module} imports {sorted(bad)}"
    for package in APPROACH_PACKAGES:
      if module.startswith(package):
        others = {e for e in edges if e.startswith(APPROACH_PACKAGES)
                  and not e.startswith(package)}
        assert not others, f"{module} imports another approach: {sorted(others)}"


def test_no_shared_module_branches_on_an_approach_by_name():
  for path in (REPO / "trainers" / "common").rglob("*.py"):
    text = path.read_text()
    assert "approach ==" not in text and "approach !=" not in text, path.name
    for record in ("ALLREDUCE", "PS", "GOSSIP", "FEDAVG"):
      assert f"approaches.{record}" not in text, f"{path.name} names approaches.{record}"


def test_no_function_in_trainers_launch_experiments_or_peers_is_over_60_lines():
  long = []
  for package in ("trainers", "launch", "experiments", "peers"):
    for path in (REPO / package).rglob("*.py"):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > 60:
            long.append(f"{path.relative_to(REPO)}:{node.name} ({lines} lines)")
  assert not long
