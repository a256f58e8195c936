"""Errors a user can cause. The command line turns each into one line and exit status 2."""


class RnnlabError(Exception):
    """Bad input: a message that names the problem, shown without a traceback."""


class DataError(RnnlabError):
    """A corpus or vocabulary that cannot be read or used."""


class CheckpointError(RnnlabError):
    """A checkpoint that is missing, corrupt, foreign or of another shape."""
