"""Errors a user can act on. The CLI maps them to exit codes and prints only the message."""


class LockstepError(Exception):
    """Base class: the message says what was expected, what was found, where, and the fix."""

    exit_code = 1


class InputError(LockstepError):
    """The corpus (or another input file) cannot be read as given. Exit code 1."""

    exit_code = 1


class ConfigError(LockstepError):
    """The configuration or a --set override is invalid. Exit code 2 (a usage error)."""

    exit_code = 2
