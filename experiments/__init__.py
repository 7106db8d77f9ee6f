"""Experiments over the launcher: the comparison (compare), its report (report),
throughput benchmarks (bench) and how each approach spends an example budget
(budget). Everything here starts jobs through launch.local, as a user would."""
