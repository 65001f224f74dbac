"""User-facing errors: the CLI prints ``str(error)`` as one line and exits 2, never a traceback."""


class FacediffError(Exception):
    """A user mistake or an unusable input, described in one line naming the file/key/value and the fix."""
