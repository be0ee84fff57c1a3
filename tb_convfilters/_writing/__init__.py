"""Background writing: the TensorFlow-free ``Writer`` and its copy queue."""
