"""The one exception type users see.

Anything a user can fix (a bad config key, a missing file, an unreachable camera) raises
`StreamrecError` with a single line naming the problem and the fix; the CLI prints that
line and exits non-zero instead of showing a traceback.
"""


class StreamrecError(Exception):
    """A problem the user can fix; ``str(err)`` is the one-line message shown to them."""
