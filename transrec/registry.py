"""Name -> class registries, so configs pick components by name (timm's `create_model` idea)."""

from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, TypeVar

from transrec.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of factories with helpful errors for unknown names."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._entries[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        if name not in self._entries:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} (available: {', '.join(sorted(self._entries))})")
        return self._entries[name]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries


USER_ENCODERS: Registry = Registry("user encoder")
ITEM_ENCODERS: Registry = Registry("item encoder")
OBJECTIVES: Registry = Registry("objective")
DATASETS: Registry = Registry("dataset")
