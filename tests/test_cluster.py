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
