"""Error types whose message is the one line a user sees (the CLI prints it without a traceback)."""


class LandmarkEdgeError(Exception):
    """Base class: ``str(error)`` names the file or value and the problem, in one line."""


class InputError(LandmarkEdgeError):
    """An input image (or folder) cannot be used; other inputs of the same run go on."""


class WeightsError(LandmarkEdgeError):
    """A weights file or checkpoint is missing, malformed, or does not fit the request."""


class NoDefaultWeightsError(WeightsError):
    """No weights were given and the installed package ships none."""
