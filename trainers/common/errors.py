"""The data error that becomes one line and exit code 1 at the trainer's edge (TF-free).
Usage errors are cluster.errors.ConfigError, shared with the launcher's side."""


class DataError(ValueError):
  """A dataset cannot be loaded; the message is one line saying how to fix it."""
