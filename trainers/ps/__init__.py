"""Centralized parameter server: ParameterServerStrategy + ClusterCoordinator, async
or sync. trainer.py is the coordinator's loop; config.py the flags (TF-free);
aggregation.py the sync aggregation math; servers.py the worker and ps tasks.
Run it with `python -m trainers.ps`."""
