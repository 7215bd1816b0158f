"""Training and evaluation: the loop, optimizers and schedules, checkpoints, metrics."""
