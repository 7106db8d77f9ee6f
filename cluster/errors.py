"""The usage error every layer raises for a bad flag value or a bad cluster description."""


class ConfigError(ValueError):
  """A usage error: bad flag value, bad TF_CONFIG or srun environment. One line."""


def check_choice(field: str, value, choices) -> None:
  """Raises ConfigError naming the flag, the value and the valid values."""
  if value not in choices:
    raise ConfigError(f"--{field} must be one of {', '.join(map(str, choices))}; "
                      f"got {value!r}")
