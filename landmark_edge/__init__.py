"""landmark-edge: GU2Net universal anatomical landmark detection, from training to deployed inference."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("landmark-edge")
except PackageNotFoundError:  # running from a source tree that was not installed (e.g. PYTHONPATH=.)
    __version__ = "0.1.0+source"
