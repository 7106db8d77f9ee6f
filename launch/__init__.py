"""Launcher: pure cluster planning (plan.py) and the one module that spawns processes (spawn.py)."""
