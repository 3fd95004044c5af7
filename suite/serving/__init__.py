"""Serving an exported model over HTTP without TensorFlow: batching and the
web app of clients/serve.py."""
