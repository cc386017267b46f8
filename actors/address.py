"""Where an actor lives: a node endpoint and a name on it, written ``endpoint#name``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    endpoint: str
    name: str

    def __post_init__(self) -> None:
        if "://" not in self.endpoint:
            raise ValueError(f"endpoint must look like ipc://PATH or tcp://HOST:PORT, got {self.endpoint!r}")
        if not self.name or "#" in self.name:
            raise ValueError(f"actor name must be non-empty and without '#', got {self.name!r}")

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
