"""Errors a user can fix in the data layer: missing or corrupt files, impossible loader settings."""
from __future__ import annotations

from common.errors import ConfigError, UserInputError


class DataError(UserInputError):
    """A data source or .beton file is missing, truncated, malformed or fails its checksum."""


class DataConfigError(ConfigError):
    """A :class:`data.config.DataConfig` asks for something impossible (e.g. a search portion of 1.5).

    With ``key`` it reads like every other config error (``config key 'search_portion' must be in (0, 1)
    (got 1.5)``); the config loader prefixes the section (``data.``)."""
