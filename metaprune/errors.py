"""User-facing errors: the CLI prints their message on one line and exits non-zero."""


class MetapruneError(ValueError):
    """A bad input or state the user can fix; the message names the value and what is accepted."""

    exit_code = 2


class StoreError(MetapruneError):
    """A store or results directory that cannot be used as asked."""


class RuntimeFailure(RuntimeError):
    """Something failed while running (disk full, worker lost); exit code 1."""

    exit_code = 1


class MetapruneWarning(UserWarning):
    """Something skipped or assumed on the user's behalf; the CLI prints it as one ``warning:`` line."""


class StoreDamaged(RuntimeFailure):
    """Part of a store's data on disk cannot be read (a truncated, empty or corrupt chunk); exit code 1."""
