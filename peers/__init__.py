"""The tools a user would pick instead, run on exactly the suite's work: Flower's FedAvg
and Horovod's all-reduce, as programs the suite's launcher starts (one per task, with
the task's TF_CONFIG, per-task logs, the byte-counting shim and supervision).

They run in their own environment, `.venv-peers` (`make peers`, requirements-peers.lock):
Flower 1.23 needs numpy >= 1.26, click < 8.2 and cryptography < 45, which the suite's own
lock (TFF 0.87's numpy ~= 1.25) cannot take, and Horovod 0.28.1 is built from source
against the same TF 2.14.1. Each program reuses the suite's data, partition, model,
optimizer recipe, scorer, progress records and summary.json (trainers/common), so the
report reads their runs like any other. experiments/peers.py plans their runs.
"""
