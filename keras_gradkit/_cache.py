"""State keras_gradkit keeps for a user's object (private): the one way to do it.

The state lives on the object itself, as a plain attribute set with
`object.__setattr__` (so Keras's attribute tracking does not see it), holding
a plain `_Entries` object: Keras's saving walks an attribute only if it is a
Keras object or a container, so nothing kept here is ever saved. It goes away
with the object (a module-level mapping would keep the object alive through
its values, e.g. a traced train function that refers to the model).
"""

_ATTRIBUTE = "_keras_gradkit_state"


class _Entries:
    """A namespace of keras_gradkit's state for one object."""


def _entries(obj):
    entries = obj.__dict__.get(_ATTRIBUTE)
    if entries is None:
        entries = _Entries()
        object.__setattr__(obj, _ATTRIBUTE, entries)
    return entries


def get(obj, name, default=None):
    """The state `name` kept for `obj`, or `default`."""
    entries = obj.__dict__.get(_ATTRIBUTE)
    return default if entries is None else getattr(entries, name, default)


def put(obj, name, value):
    """Keeps `value` as the state `name` of `obj`; returns it."""
    setattr(_entries(obj), name, value)
    return value


def get_or_make(obj, name, make):
    """The state `name` of `obj`, made with `make()` the first time."""
    value = get(obj, name)
    return value if value is not None else put(obj, name, make())
