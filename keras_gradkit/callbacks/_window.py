"""A window over running totals (private): remember a reading, then take
the difference to the next one. GradientBoard keeps one per span it reports
on: since the previous write, over the epoch, since the previous check."""


class Window:
    """The change of `read()` since the window was last `restart`ed.

    Args:
        read: returns the current reading: a `recording.Totals`, a
            `Counts` or a tuple of them, each with a `since(earlier)`.
    """

    def __init__(self, read):
        self._read = read
        self._start = None

    def restart(self):
        """Starts the window at the current reading; returns it."""
        self._start = self._read()
        return self._start

    def advance(self):
        """`(change, now)`: the change since the start, then starts again at `now`.
        A window never started counts from zero (`change` is `now`)."""
        now = self._read()
        start, self._start = self._start, now
        if start is None:
            return now, now
        if isinstance(now, tuple) and not hasattr(now, "since"):
            return tuple(n.since(s) for n, s in zip(now, start)), now
        return now.since(start), now
