"""Where the schema registry is and how to log in to it (``schemas.registry`` uses it).

Kept apart so that settings objects can hold it without importing the codecs.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import SecretStr

__all__ = ["RegistrySettings"]


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    url: str
    """Base URL, e.g. ``http://registry:8081`` (no credentials in it)."""
    username: str | None = None
    password: SecretStr | None = None
    """HTTP basic authentication; never logged or shown."""
    timeout_seconds: float = 5.0
    """Longest wait for one answer of the registry."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            msg = f"schema registry URL: expected http(s)://host[:port], found {self.url!r}"
            raise ValueError(msg)
        if parts.username is not None or parts.password is not None:
            msg = (
                "schema registry URL: expected no credentials in the URL (give the user "
                "name and password as settings), found some"
            )
            raise ValueError(msg)
        if self.password is not None and self.username is None:
            raise ValueError("schema registry: a password needs a user name, found none")
        if self.timeout_seconds <= 0:
            msg = f"schema registry timeout: expected > 0 s, found {self.timeout_seconds}"
            raise ValueError(msg)
