"""What every entry point answers the same way: --help / -h / --helpshort / --helpfull
(its flags with their help text), --version, and its own name in error lines.

Each entry parses into a FlagValues of its own (absl's help flags live only on the
global one), so each asks `answered(argv, fv, prog, doc)` before it parses.
"""

import configparser
import os
import sys
from typing import Sequence

from absl import flags

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
