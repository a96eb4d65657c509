"""Evaluation: how well LMs do the tasks of a DoD (with the gold instruction, the input alone, few-shot)."""
