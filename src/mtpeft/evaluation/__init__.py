"""Evaluation: pure metric functions and the per-task evaluation driver."""
