"""Errors that become one line and a usage exit code at the trainer's edge (TF-free)."""


class ConfigError(ValueError):
  """A usage error: bad flag value or bad TF_CONFIG. The message is one line."""


class DataError(ValueError):
  """A dataset cannot be loaded; the message is one line saying how to fix it."""
