"""Which packages the wheel holds; everything else about the project is in pyproject.toml.

The deployment profiles live in the top-level ``export/`` folder, where people read and edit them beside the
README, and must also ship inside the wheel, where ``landmark_edge.export.profiles`` reads them with
importlib.resources. ``package_dir`` maps the package folder ``landmark_edge/profiles`` onto ``export/``, so the
YAML files have one home and need no copy step. pyproject.toml's ``packages.find`` cannot name a package whose
folder has another name, which is why the package list is written here.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["landmark_edge*"]), "landmark_edge.profiles"],
    package_dir={"landmark_edge.profiles": "export"},
)
