"""Federated averaging with TensorFlow Federated, and its variants (FedProx, FedSGD,
SCAFFOLD, adaptive servers, compression, DP). trainer.py opens the run; rounds.py is
the round loop; config.py the flags and recipe (TF-free); process.py builds the
learning process behind one interface; aggregators.py combines the updates and
measures client drift; scaffold.py is SCAFFOLD's own process; checkpoint.py the
per-round state; executors.py TFF's executor services; fedmath.py the math.
Run it with `python -m trainers.federated`."""
