"""Launcher: pure cluster planning (plan.py) and the one module that spawns processes (spawn.py).

`python -m launch.<tool>` imports this package while Python is still locating the tool
(sys.argv[0] is then "-m"), before the tool's own code, which Python compiles first
(bytecode is not written here): a Ctrl-C in that window would end in Python's
KeyboardInterrupt traceback. Until the tool says it has started (`started()`), it ends
with one line and 130 instead: nothing has been started that could be left behind.
launch.local hands over as its main() begins; the other tools (k8s, shim, slurm_exec,
which exec's or only write files) keep this answer to the end.
"""

import os
import signal
import sys


def _interrupted_while_starting(signum, frame) -> None:
  del frame
  os.write(2, b"launcher: interrupted (SIGINT) while starting; nothing started\n")
  os._exit(128 + signum)  # pylint: disable=protected-access


def started() -> None:
  """The tool's own Ctrl-C handling takes over (Python's KeyboardInterrupt again)."""
  if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)


if sys.argv[:1] == ["-m"]:
  signal.signal(signal.SIGINT, _interrupted_while_starting)
