"""python -m trainers.ps: bad flags end here with one line, before TF loads."""
import sys

from trainers.common import entry
from trainers.ps import config

entry.check_before_tf(config)
from trainers.ps import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.exit(trainer.run_main())
