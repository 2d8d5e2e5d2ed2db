"""The one exception type a user sees as a single line (the CLI prints it without a traceback)."""


class AnimlcmError(Exception):
    """A problem with the user's input or environment: the message names the file and the fix."""
