"""Error types whose message is the one line a user sees (the CLI prints it without a traceback)."""

import re


class LandmarkEdgeError(Exception):
    """Base class: ``str(error)`` names the file or value and the problem, in one line."""


class InputError(LandmarkEdgeError):
    """An input image (or folder) cannot be used; other inputs of the same run go on."""


class WeightsError(LandmarkEdgeError):
    """A weights file or checkpoint is missing, malformed, or does not fit the request."""


class NoDefaultWeightsError(WeightsError):
    """No weights were given and the installed package ships none."""


class OutputError(LandmarkEdgeError, OSError):
    """An output cannot be written (disk full, read-only folder, no permission): the message names the path. Written
    atomically, the file it would have replaced and every earlier output stay whole. An ``OSError`` too, so code
    that tolerates a failed write (the cache) still does."""


class RunInterrupted(Exception):
    """A run was asked to stop (SIGINT, SIGTERM) and stopped after the batch in progress; what it finished is on
    disk. Not a :class:`LandmarkEdgeError`: the command reports it with the command that resumes."""


class BackendUnavailable(LandmarkEdgeError):
    """A backend cannot run here (library, device or artefact missing); the message says which."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (or its type name): what a one-line report can quote."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # some libraries colour their messages
    return text.splitlines()[0] if text else type(error).__name__
