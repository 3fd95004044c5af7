"""The model for serving: SavedModel, TFLite and ONNX."""
