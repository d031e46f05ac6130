"""The torch backend's parts of keras_gradkit (private)."""
