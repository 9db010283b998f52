"""Logs parsed into records (placeholder: being written)."""

from __future__ import annotations

from collections.abc import Iterator

from collectors.base import Context, Item


def auth(ctx: Context) -> Iterator[Item]:
    return iter(())


def web(ctx: Context) -> Iterator[Item]:
    return iter(())
