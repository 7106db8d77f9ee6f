"""The bind shim: build it once, say where it is (process-free apart from the compiler).

TF and TFF servers bind every interface; launch/task_shim.c, preloaded into each
task, makes them listen on the task's own address (TFDIST_BIND_ADDRESS, set by
the plan). Built into the virtual environment by `make venv`, or here on first use.
"""

import hashlib
import os
import shutil
import subprocess
import sys

from cluster import posix

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "task_shim.c")
LIB_NAME = "libtfdist_task.so"


def default_lib_path() -> str:
  """Named by a digest of the source: checkouts of different versions sharing one
  virtual environment (git worktrees) each get their own build, never the other's."""
  with open(SOURCE, "rb") as f:
    digest = hashlib.sha256(f.read()).hexdigest()[:12]
  stem, ext = os.path.splitext(LIB_NAME)
  return os.path.join(sys.prefix, "lib", "tfdist", f"{stem}-{digest}{ext}")


def build(out_path: str, cc: str | None = None) -> None:
  """Compiles the shim to `out_path` (written then renamed). Raises on failure."""
  cc = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
  if not cc:
    raise FileNotFoundError("no C compiler (cc/gcc) on PATH")
  os.makedirs(os.path.dirname(out_path), exist_ok=True)
  with posix.atomic_path(out_path, ".so") as tmp:
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", tmp, SOURCE, "-ldl",
                    "-lpthread"], check=True, capture_output=True, text=True)


def shim_path(path: str | None = None) -> str | None:
  """The built shim (building it if missing or older than its source); None if it
  cannot be built here."""
  path = path or default_lib_path()
  if os.path.exists(path) and os.path.getmtime(path) >= os.path.getmtime(SOURCE):
    return path
  try:
    build(path)
  except (OSError, subprocess.CalledProcessError):
    return None
  return path


if __name__ == "__main__":
  p = shim_path()
  print(p or "bind shim: cannot build (no C compiler)")
  sys.exit(0 if p else 1)
