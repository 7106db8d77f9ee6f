"""What every entry point answers the same way: --help / -h / --helpshort / --helpfull
(its flags with their help text), --version, and its own name in error lines.

Each entry parses into a FlagValues of its own (absl's help flags live only on the
global one), so each asks `answered(argv, fv, prog, doc)` before it parses.
"""

import configparser
import contextlib
import os
import re
import sys
import threading
from typing import Sequence

from absl import flags

# TF's and TFF's start-up lines that say nothing about this run (every process prints
# them on a CPU-only machine): kept in each task's log, left off the console.
TF_NOISE = ("Unable to register cuDNN factory", "Unable to register cuFFT factory",
            "Unable to register cuBLAS factory", "TF-TRT Warning: Could not find TensorRT",
            "Failed to detect the fetch node(s)", "oneDNN custom operations are on",
            "Could not find cuda drivers on your machine",
            "This TensorFlow binary is optimized to use available CPU instructions",
            "To enable the following instructions:",
            "does not implement the AsGraphDefInternal() method needed to apply optimizations",
            # TFDS's as_dataset traced by AutoGraph (PS workers read their shard locally)
            "appears to be decorated by wrapt, which is not yet supported by AutoGraph",
            # a PS server task's last line when the chief ends the job: success
            "Exiting the process: training finished",
            # async gossip's first puts to a peer whose server is not up yet (retried)
            "CreateSession failed because worker",
            "while calling /tensorflow.WorkerService/GetStatus")
# The detail line under such a message: gRPC's JSON, the peer not up yet.
_RESET = re.compile(r'^:\{"created".*"grpc_message":"(Connection reset by peer|failed to '
                    r'connect to all addresses)"')
# TF's C++ informational lines (grappler, thread pools, ...): the log keeps them.
_CPP_INFO = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: I ")


def flag_value(args: Sequence[str], name: str, default: str | None = None) -> str | None:
  """Pure: the value of the last `--name=value` in a command line's `args` (absl's
  rule: the last one wins), `default` when there is none."""
  return next((a.split("=", 1)[1] for a in reversed(args) if a.startswith(f"--{name}=")),
              default)


def is_tf_noise(line: str) -> bool:
  """A TF/TFF start-up or informational line that says nothing about this run."""
  return (any(h in line for h in TF_NOISE) or bool(_CPP_INFO.match(line))
          or bool(_RESET.match(line)))


@contextlib.contextmanager
def quiet_tf_startup(fd: int = 2):
  """Around `import tensorflow` in a program run directly: TF's C++ start-up lines on
  `fd` (stderr) are dropped, every other line passes through."""
  saved = os.dup(fd)
  read_end, write_end = os.pipe()
  os.dup2(write_end, fd)
  os.close(write_end)

  def pump():
    with os.fdopen(read_end, "r", errors="replace") as lines:
      for line in lines:
        if not is_tf_noise(line):
          os.write(saved, line.encode(errors="replace"))

  thread = threading.Thread(target=pump, daemon=True)
  thread.start()
  try:
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, fd)  # the pipe's last writer closes: the pump drains and ends
    thread.join(timeout=5)
    os.close(saved)


PACKAGE = "tf-distributed-suite"
HELP = ("-h", "--help", "--helpshort", "--helpfull", "-?")
VERSION = "--version"


def version() -> str:
  """The suite's version: the installed package's, else setup.cfg's."""
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version(PACKAGE)
  except Exception:  # pylint: disable=broad-except  (not installed: a plain checkout)
    parser = configparser.ConfigParser()
    parser.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "setup.cfg"))
    return parser.get("metadata", "version", fallback="unknown")


def prog(default: str) -> str:
  """The name the user typed: a console script's (tfdist-launch), else `default`
  (the module, e.g. launch.local)."""
  name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
  return name if name.startswith("tfdist-") else default


def usage_text(fv: flags.FlagValues, prog_name: str, doc: str | None) -> str:
  """The entry's description (its module docstring) and every flag with its help."""
  head = (doc or "").strip()
  body = fv.get_help(include_special_flags=False).strip()
  return (f"usage: {prog_name} [flags]\n\n{head}\n\nflags:\n{body}\n"
          f"  --version: print the suite's version ({version()}) and exit\n"
          f"  -h, --help, --helpshort, --helpfull: this text\n")


def answered(argv: Sequence[str], fv: flags.FlagValues, prog_name: str,
             doc: str | None, out=None) -> bool:
  """Prints the help or the version when argv (before any `--`) asks for it; True then
  (the caller exits 0)."""
  out = out or sys.stdout
  own = list(argv[1:])
  own = own[:own.index("--")] if "--" in own else own
  if any(a in HELP for a in own):
    out.write(usage_text(fv, prog_name, doc))
    return True
  if VERSION in own:
    out.write(f"{prog_name} {version()}\n")
    return True
  return False


def exit_if_answered(argv: Sequence[str], fv: flags.FlagValues, prog_name: str,
                     doc: str | None) -> None:
  """`answered`, then exit 0 (as argparse does for --help)."""
  if answered(argv, fv, prog_name, doc):
    sys.stdout.flush()
    sys.exit(0)
