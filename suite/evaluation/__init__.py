"""Evaluating a model: predictions over a split, metrics, reports, --watch."""
