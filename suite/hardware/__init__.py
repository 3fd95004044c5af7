"""The machine at hand: the fastest precision on it, and its memory."""
