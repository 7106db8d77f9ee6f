"""python -m trainers.allreduce: bad flags end here with one line, before TF loads."""
import sys

from trainers.allreduce import config
from trainers.common import entry

entry.check_before_tf(config)
from trainers.allreduce import trainer  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.exit(trainer.run_main())
