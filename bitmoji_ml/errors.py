"""The one exception type a person should see: cli.py prints its message and exits 1."""


class BitmojiError(Exception):
    """A problem the user caused or can fix; the message says what went wrong and what to do."""


class ReportedElsewhere(BitmojiError):
    """An error another process has already reported (rank 0 of a torchrun job speaks for all
    ranks): cli.py exits 1 without printing it again."""
