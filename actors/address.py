"""Where an actor lives: a node endpoint and a name on it, written ``endpoint#name``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    endpoint: str
    name: str

    def __post_init__(self) -> None:
        check_endpoint(self.endpoint)
        check_name(self.name)

    def __str__(self) -> str:
        return f"{self.endpoint}#{self.name}"

    @classmethod
    def parse(cls, text: str | Address) -> Address:
        if isinstance(text, Address):
            return text
        endpoint, sep, name = text.rpartition("#")
        if not sep:
            raise ValueError(f"an actor address is ENDPOINT#NAME, got {text!r}")
        return cls(endpoint, name)


def check_endpoint(endpoint: str) -> None:
    """ValueError unless ``endpoint`` can be a node's address (before anything is sent to it)."""
    if "://" not in endpoint:
        raise ValueError(f"endpoint must look like ipc://PATH or tcp://HOST:PORT, got {endpoint!r}")


def check_name(name: str) -> None:
    """ValueError unless ``name`` can be an actor's name on a node."""
    if not name or "#" in name:
        raise ValueError(f"actor name must be non-empty and without '#', got {name!r}")
