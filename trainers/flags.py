"""Every trainer's flags, assembled per approach, importable without TensorFlow.

Each approach package owns its flags and config (`<package>/config.py`: APPROACH,
define_flags, Config); this module only maps the approach records to them. The
launcher defines the same flags into a private FlagValues to reject an unknown
trainer flag or bad value *before* it starts any process.
"""

from types import ModuleType

from absl import flags

from cluster import approaches
from trainers.allreduce import config as allreduce_config
from trainers.common import config as config_lib
from trainers.common.flags import parse
from trainers.federated import config as federated_config
from trainers.gossip import config as gossip_config
from trainers.ps import config as ps_config

# approach -> its config module (keyed by the records: the names live in cluster.approaches).
CONFIGS: dict[str, ModuleType] = {m.APPROACH: m for m in (
    allreduce_config, ps_config, gossip_config, federated_config)}


def config_module(approach: str) -> ModuleType:
  """The config module of `approach` (ConfigError naming --approach if unknown)."""
  return CONFIGS[approaches.get(approach).name]


def define_flags_for(approach: str, fv: flags.FlagValues) -> None:
  config_module(approach).define_flags(fv)


def check_trainer_argv(approach: str, argv: list[str]) -> flags.FlagValues:
  """Parses `argv` against `approach`'s flags; raises flags.Error on a bad flag.
  Returns the parsed values (the launcher's preflight reads --dataset from them)."""
  fv = flags.FlagValues()
  define_flags_for(approach, fv)
  try:
    return parse(fv, ["trainer"] + list(argv))
  except flags.UnrecognizedFlagError as e:
    owners = [a for a in CONFIGS if a != approach and e.flagname in _flag_names(a)]
    if owners:
      raise flags.Error(f"--{e.flagname} is a flag of --approach={' / '.join(owners)}, not "
                        f"of {approach}") from e
    raise


def _flag_names(approach: str) -> set[str]:
  fv = flags.FlagValues()
  define_flags_for(approach, fv)
  return set(fv)


def trainer_flag_owner(name: str) -> str | None:
  """The first approach whose trainer defines flag `name` (None: no trainer's)."""
  return next((a for a in CONFIGS if name in _flag_names(a)), None)


def check_values(fv: flags.FlagValues, approach: str) -> config_lib.ApproachConfig:
  """The approach's config from parsed flags: every value a trainer validates that
  can be checked without TensorFlow. Raises ConfigError naming the flag."""
  return config_module(approach).Config.from_flags(fv, approach)
