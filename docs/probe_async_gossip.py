"""Probe (issue 25, item 2): TF 2.14's runtime hosts a wait-free exchange between worker
processes. Each worker runs a tf.distribute.Server for its task of the launcher's cluster
(TF_CONFIG) and keeps a "mailbox" resource variable on its own device; it *pushes* its
parameters (and their step) into its neighbour's mailbox with an AssignVariableOp placed
on the neighbour's device (the resource found by its shared_name), from a background
thread, through a tf.compat.v1 Session on its own server. Its loop reads only its own
mailbox (local), so a stopped or slow neighbour blocks only the pushing thread.

    python -m launch.local --num_workers=2 [--straggler=worker:1:3] docs/probe_async_gossip.py

Found (2026-12-02, 2 cores, 60 steps of 10 ms, 100,000 floats): no straggler, both
workers 11.1 ms a step, every step mixed a model 1 step old. With --straggler=worker:1:3:
worker:0 still 11.10 ms a step (1.00x) and mixed worker:1's model every step, 16 of its
own steps old on average (34 at most); worker:1 30.5 ms a step. A first try with eager
`tf.config.experimental_connect_to_cluster` (each process its worker task) hung in the
connect on both workers and was dropped.
"""
import json, os, threading, time
import numpy as np
import tensorflow as tf
tf.compat.v1.disable_eager_execution()
config = json.loads(os.environ["TF_CONFIG"])
me, n = config["task"]["index"], len(config["cluster"]["worker"])
peer = (me + 1) % n
spec = tf.train.ClusterSpec(config["cluster"])
server = tf.distribute.Server(spec, job_name="worker", task_index=me, start=True)
SIZE = 100_000
here, there = f"/job:worker/task:{me}", f"/job:worker/task:{peer}"
with tf.device(here):
  box = tf.compat.v1.get_variable(f"box_{me}", shape=[SIZE + 1], initializer=tf.constant_initializer(-1.0), use_resource=True)
with tf.device(there):
  peer_box = tf.raw_ops.VarHandleOp(dtype=tf.float32, shape=[SIZE + 1], shared_name=f"box_{peer}")
  push_val = tf.compat.v1.placeholder(tf.float32, [SIZE + 1])
  push = tf.raw_ops.AssignVariableOp(resource=peer_box, value=push_val)
with tf.device(here):
  read = box.read_value()
sess = tf.compat.v1.Session(server.target, config=tf.compat.v1.ConfigProto(device_filters=[here, there]))
sess.run(box.initializer)
print("ready", me, flush=True)
time.sleep(3)
params = np.full([SIZE], float(me), np.float32); latest = {"step": -1}; stop = threading.Event()
def pusher():
  while not stop.is_set():
    s = latest["step"]
    if s >= 0:
      try: sess.run(push, {push_val: np.concatenate([params, [float(s)]])})
      except Exception as e: print("push failed", type(e).__name__, str(e)[:100], flush=True); time.sleep(0.5)
    time.sleep(0.005)
threading.Thread(target=pusher, daemon=True).start()
stale, times = [], []
for step in range(60):
  t = time.perf_counter()
  got = sess.run(read)
  if got[-1] >= 0:
    params = 0.5 * (params + got[:-1]); stale.append(step - int(got[-1]))
  latest["step"] = step
  time.sleep(0.01)
  times.append(time.perf_counter() - t)
stop.set()
print(json.dumps({"worker": me, "mean_step_ms": 1000 * float(np.mean(times)), "mixes": len(stale),
                  "staleness_mean": float(np.mean(stale)) if stale else None, "staleness_max": max(stale) if stale else None}), flush=True)
time.sleep(3)
