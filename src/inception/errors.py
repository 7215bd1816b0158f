"""Errors a user can cause. The CLI prints these as one line, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (a path, a config key, a checkpoint, an input size).

    The message is one line that names the thing that is wrong and how to fix it.
    """

    exit_code = 2


class CheckpointError(UserError):
    """A weights or checkpoint file that cannot be loaded into the model."""
