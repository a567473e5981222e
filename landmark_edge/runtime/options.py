"""Typed, strict backend options: each backend declares the keys it reads, and nothing else gets through.

``--option threads=2`` reaches a backend as ``{"threads": 2}``; :meth:`BackendOptions.parse` turns that into the
backend's own option model, so a misspelt or foreign key is one line naming the backend and its known keys
instead of being silently ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from landmark_edge.errors import LandmarkEdgeError


class BackendOptionError(LandmarkEdgeError):
    """An option the backend does not know, or a value of the wrong type."""


class BackendOptions(BaseModel):
    """Base of every backend's option set (a backend without options uses it as it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, backend: str, values: dict[str, Any] | BackendOptions) -> BackendOptions:
        """``values`` as this option set; an unknown key or a bad value is one line naming ``backend``."""
        if isinstance(values, cls):
            return values
        known = ", ".join(cls.model_fields) or "none"
        unknown = sorted(set(values) - set(cls.model_fields))
        if unknown:
            raise BackendOptionError(f"{backend} backend: unknown option(s) {', '.join(unknown)} (known: {known})")
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            problem = error.errors()[0]
            key = ".".join(str(part) for part in problem["loc"])
            raise BackendOptionError(f"{backend} backend: option {key}: {problem['msg']}") from None
