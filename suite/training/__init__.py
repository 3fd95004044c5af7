"""One training run: its settings, the step, the graph, the session and the loop."""
