"""The jax backend's parts of keras_gradkit (private)."""
