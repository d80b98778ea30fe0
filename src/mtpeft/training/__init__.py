"""Training: task samplers, loss weighting, batching, checkpoints and the plain PyTorch loop."""
