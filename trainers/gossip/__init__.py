"""Decentralized gossip (D-PSGD): no server, each worker averages with its neighbours.
trainer.py is the D-PSGD loop; config.py the flags (TF-free); mixing.py the topologies
and mixing matrices (pure numpy); exchange.py the neighbour exchange over TF's
collectives. Run it with `python -m trainers.gossip`."""
