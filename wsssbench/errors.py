"""The one exception type for bad input. The CLI turns it into one line on stderr and exit code 2."""


class UserError(Exception):
    """Something the user can fix: a missing file, a wrong shape, an unknown name, a bad value.

    The message is one line that says what and where, and what to do about it.
    """


#: Exit codes scripts can rely on.
EXIT_CHECK_FAILED = 1   # a check ran and found a problem (leaderboard check, regression guard)
EXIT_BAD_INPUT = 2      # bad input or usage: nothing was computed, nothing half-written
