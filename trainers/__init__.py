"""Training, evaluation, losses and metrics for bioseg models."""
