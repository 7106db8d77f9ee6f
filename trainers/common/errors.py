"""Errors that become one line and their own exit code at the trainer's edge (TF-free;
cluster/exits.py has the codes). Usage errors are cluster.errors.ConfigError, shared
with the launcher's side."""


class DataError(ValueError):
  """A dataset cannot be loaded; the message is one line saying how to fix it."""


class Diverged(RuntimeError):
  """A non-finite loss or metric: training cannot recover. One line naming the step."""
