"""Exit codes every task and the launcher share (README, "Failures and restarts").

A launcher with --max_restarts retries a failed job only when a retry can succeed:
never after a usage error, missing data or a divergence (`NOT_RETRIED`).
"""

OK = 0
USAGE = 2            # a bad flag, value or input; nothing was (or should be) started
FAULT_INJECTED = 3   # --fail_task crashed this task on purpose
DIVERGED = 65        # a non-finite loss or metric (EX_DATAERR)
DATA = 66            # the dataset is missing or unusable (EX_NOINPUT)
STARTUP = 69         # a peer never answered within --startup_timeout (EX_UNAVAILABLE)
BIND = 71            # a task could not listen on its address: port taken (EX_OSERR)
LOG_WRITE = 74       # a task's log could not be written, e.g. a full disk (EX_IOERR)
TIMEOUT = 124        # the launcher's --timeout ran out
TERMINATED = 143     # 128 + SIGTERM: stopped on request

NOT_RETRIED = (USAGE, DATA, DIVERGED)

# The launcher was told to stop (Ctrl-C, SIGTERM, SIGHUP: 128 + the signal): a tool
# that runs several jobs (compare, bench) stops too instead of starting the next.
STOPPED_BY_SIGNAL = (128 + 1, 128 + 2, 128 + 15)
