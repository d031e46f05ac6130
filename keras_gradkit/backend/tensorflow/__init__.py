"""The tensorflow backend's parts of keras_gradkit (private)."""
