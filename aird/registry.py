"""One small registry type, one instance per concern (models, losses, adapters)."""

from __future__ import annotations

import inspect
from typing import Callable, Generic, TypeVar

from aird.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(fn: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = fn
            return fn

        return deco

    def _factory(self, name: str) -> Callable[..., T]:
        if name not in self._items:
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")
        return self._items[name]

    def get(self, name: str, **kwargs) -> T:
        return self._factory(name)(**kwargs)

    def check_options(self, name: str, options: dict, where: str, extra: tuple[str, ...] = ()) -> None:
        """Fail at config load, not mid-run, when ``options`` has a key ``name``'s constructor does not take."""
        valid = [p for p in inspect.signature(self._factory(name)).parameters if p not in ("self", "args", "kwargs")]
        valid += list(extra)
        bad = [k for k in options if k not in valid]
        if bad:
            raise ConfigError(
                f"{where}: unknown key {bad[0]!r} for {self.kind} {name!r}; valid keys: {', '.join(valid)}"
            )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
