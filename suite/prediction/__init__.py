"""Classifying image files with a trained model, and the form of the answers."""
