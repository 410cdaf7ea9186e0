"""One small registry type, one instance per concern (models, losses, adapters)."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, TypeVar

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

    def check(self, name: str, where: str | None = None) -> None:
        """The one unknown-name error, listing the valid names; ``where`` names the setting."""
        if name not in self._items:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}")

    def _factory(self, name: str) -> Callable[..., T]:
        self.check(name)
        return self._items[name]

    def get(self, name: str, **kwargs) -> T:
        return self._factory(name)(**kwargs)

    def defaults(self, name: str) -> dict[str, Any]:
        """The options ``name``'s constructor takes, with their defaults (``inspect.Parameter.empty`` if none)."""
        params = inspect.signature(self._factory(name)).parameters.values()
        return {p.name: p.default for p in params if p.name not in ("self", "args", "kwargs")}

    def check_options(self, name: str, options: dict, where: str, extra: tuple[str, ...] = ()) -> None:
        """Fail at config load, not mid-run, when ``options`` has a key ``name``'s constructor does not take."""
        valid = list(self.defaults(name)) + list(extra)
        bad = [k for k in options if k not in valid]
        if bad:
            raise ConfigError(
                f"{where}: unknown key {bad[0]!r} for {self.kind} {name!r}; valid keys: {', '.join(valid)}"
            )

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items
