"""Errors that become one line and an exit code at the trainer's edge (TF-free)."""

from cluster.errors import ConfigError  # noqa: F401  # re-exported: the usage error


class DataError(ValueError):
  """A dataset cannot be loaded; the message is one line saying how to fix it."""
