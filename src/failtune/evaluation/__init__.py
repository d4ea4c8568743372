"""Evaluation: load problems, generate (or read) completions, grade them into records; extract
keeps the failures as training data, and sharded extractions merge back into one."""
