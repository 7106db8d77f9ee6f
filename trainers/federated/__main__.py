"""python -m trainers.federated: bad flags end here with one line, before TF loads."""
import sys

from trainers.common import entry
from trainers.federated import config

entry.check_before_tf(config)
from trainers.federated import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.exit(trainer.run_main())
