"""Inference: one backbone pass per function feeds every head; embedding cache."""
