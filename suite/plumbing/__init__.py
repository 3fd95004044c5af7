"""What every script shares: TensorFlow's environment, flags, one-line errors,
safe writes, progress."""
