"""The one decorator that makes a public object serializable by Keras."""

import keras

PACKAGE = "keras_gradkit"


def keras_gradkit_export(cls=None, *, name=None):
    """Registers `cls` with Keras serialization under the `keras_gradkit` package.

    Saved configs then refer to the object as `keras_gradkit>ClassName`, and
    `keras.saving.load_model` finds it once `keras_gradkit` has been imported.

    Args:
        cls: the class (or function) to register.
        name: optional registered name; defaults to the class name. Use it to
            keep an old name loadable after a rename.
    """

    def decorate(obj):
        return keras.saving.register_keras_serializable(package=PACKAGE, name=name)(obj)

    if cls is None:
        return decorate
    return decorate(cls)
