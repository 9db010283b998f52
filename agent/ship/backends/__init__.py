"""The upload backends, one file per storage service, and their registry.

REGISTRY maps a ticket's "kind" to its Backend class. It is built from the classes themselves: every module
of this package is imported and each Backend subclass defined there that sets `kind` is registered, so a new
service is one new file here. Two classes claiming one kind stop the import (the ticket would be ambiguous).
pkgutil lists the modules from the folder, or from the single binary's archive (PyInstaller's pkgutil hook;
build/triagent.spec collects every submodule of agent)."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable

from agent.ship.backends.base import Backend

__all__ = ["KINDS", "REGISTRY", "Backend", "build_registry"]


def build_registry(classes: Iterable[type[Backend]]) -> dict[str, type[Backend]]:
    """kind -> class for the classes that declare a kind; a kind declared twice is refused."""
    registry: dict[str, type[Backend]] = {}
    for cls in classes:
        if not cls.kind:
            continue
        other = registry.get(cls.kind)
        if other is not None and other is not cls:
            raise TypeError(f"backend kind {cls.kind!r} is declared by both {other.__module__}.{other.__qualname__} "
                            f"and {cls.__module__}.{cls.__qualname__}")
        registry[cls.kind] = cls
    return registry


def _declared_here() -> Iterable[type[Backend]]:
    """The Backend subclasses defined in this package's modules, by module name then definition order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, Backend) and value.__module__ == module.__name__:
                yield value


REGISTRY: dict[str, type[Backend]] = build_registry(_declared_here())
KINDS: tuple[str, ...] = tuple(REGISTRY)
