"""The one exception type for user mistakes: the CLI prints its message (what was wrong, how to fix it) and exits 2."""


class UserError(Exception):
    """A mistake the user can fix (bad data, unknown name, unreachable server); never a bug of ours."""
