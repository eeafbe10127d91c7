"""The one exception type for refusals a user can act on."""


class Refused(Exception):
    """An expected failure: bad input, a refused signature, a missing file.

    Its message is one line that says what was refused and why; the CLIs print it and exit 1.
    """
