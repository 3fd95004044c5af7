"""The model directory train.py writes and every reader rebuilds the model from."""
