"""Trainers for the four distributed approaches, plus the path they share."""
