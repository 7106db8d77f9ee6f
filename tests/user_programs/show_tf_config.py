"""A user's program, not part of the suite: writes the TF_CONFIG it was started with
to $TFDIST_RUN_DIR/tf_config.<type>_<index>.json (the test reads them back; a chief,
which ends the job, first waits for every task's file), then
exits with the code named by --exit_code_for=<type>:<index>:<code>, if it names it."""
import json
import os
import sys
import time

config = json.loads(os.environ["TF_CONFIG"])
task = config["task"]
with open(os.path.join(os.environ["TFDIST_RUN_DIR"],
                       f"tf_config.{task['type']}_{task['index']}.json"), "w") as f:
  json.dump(config, f)
print(f"task {task['type']}:{task['index']} of {sorted(config['cluster'])}", flush=True)
if task["type"] == "chief":  # the job ends with the chief: let every task write first
  total = sum(len(a) for a in config["cluster"].values())
  deadline = time.monotonic() + 60
  while (len([n for n in os.listdir(os.environ["TFDIST_RUN_DIR"]) if n.startswith("tf_config.")])
         < total and time.monotonic() < deadline):
    time.sleep(0.1)
for arg in sys.argv[1:]:
  if arg.startswith("--exit_code_for="):
    who, code = arg.split("=", 1)[1].rsplit(":", 1)
    if who == f"{task['type']}:{task['index']}":
      sys.exit(int(code))
  if arg.startswith("--sleep="):
    time.sleep(float(arg.split("=", 1)[1]))
