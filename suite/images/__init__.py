"""One image file -> the JPEG the suite stores and the network's pixels, without TensorFlow."""
