"""Backend-free parts of the backend layer (private): `keras.ops` code that
the packages of several backends (`keras_gradkit/backend/<name>/`) share, as
Keras keeps its own in `keras/src/backend/common/`.

Like the rest of `keras_gradkit/backend/`, nothing here imports
`keras_gradkit.layers` or any other package above it.
"""
