"""Two operating-system habits every file-writing and process-starting path shares:
a file is written then renamed (a reader never sees half of it), and a child process
dies with its parent (PR_SET_PDEATHSIG), however the parent dies. Linux; TF-free."""

import contextlib
import ctypes
import os
import signal
from typing import Iterator

try:
  LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded before any fork
except OSError:  # not glibc Linux: no death signal, no namespaces
  LIBC = None
_PR_SET_PDEATHSIG = 1


@contextlib.contextmanager
def atomic_path(path: str, suffix: str = "") -> Iterator[str]:
  """Yields a temporary path beside `path` (ending in `suffix`, for writers that
  insist on one, like np.savez); when the block ends it is renamed onto `path`, so
  a reader sees the old file or the whole new one, and of concurrent writers the
  last rename wins whole. On an error the temporary file is removed."""
  tmp = f"{path}.tmp.{os.getpid()}{suffix}"
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.unlink(tmp)


def die_with_parent() -> None:
  """In a child (between fork and exec): SIGKILL when the parent dies."""
  if LIBC is not None:
    LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
