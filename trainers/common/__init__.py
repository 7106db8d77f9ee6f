"""The run path every approach shares: config, data, model factories, evaluation,
progress, outputs and the run session that ties them together (session.py)."""
