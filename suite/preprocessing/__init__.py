"""Pixels in the graph: normalisation, the evaluation transform and the training augmentation."""
