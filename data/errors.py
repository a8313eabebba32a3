"""Errors a user can fix in the data layer: missing or corrupt files, impossible loader settings."""
from __future__ import annotations

from common.errors import UserInputError


class DataError(UserInputError):
    """A data source or .beton file is missing, truncated, malformed or fails its checksum."""


class DataConfigError(UserInputError):
    """A :class:`data.loaders.DataConfig` asks for something impossible (e.g. a search portion of 1.5)."""
