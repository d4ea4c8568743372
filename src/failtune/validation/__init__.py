"""Validation: base and candidate graded on the same held-out problems and compared pair by pair
(paired statistics, gates, forgetting and overlap checks, an optional judge)."""
