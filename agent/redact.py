"""Secrets stay home: the one place, just before the bundle writer, where records and file copies
are stripped of secret material (rules in specs/secrets.toml). Collectors report what they see;
this module decides what leaves the host."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from typing import Any

from agent.plan import Secrets

REDACTED = "<redacted>"
# Record fields that carry secret material by construction (collectors set them, we drop them).
SECRET_FIELDS = frozenset({"password_hash", "private_key_body"})
_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PEM_END = re.compile(rb"-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_PEM_BLOCK_TEXT = re.compile(
    r"(-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----)(.*?)(-----END [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----|$)",
    re.S)
_MARKER_TAIL = 64  # longest marker we must be able to see across a chunk boundary


def starts_with_private_key(head: bytes) -> bool:
    text = head.lstrip()
    return bool(_PEM_BEGIN.match(text)) or text.startswith(b"PuTTY-User-Key-File-")


class PemScrubber:
    """Overwrites private-key blocks in a byte stream with 'X' (newlines kept), preserving length.

    ``reader(read)`` wraps a ``read(n)`` function; it may return fewer bytes than asked (it holds
    back a short tail so that a marker split across two reads is still seen)."""

    def __init__(self) -> None:
        self.inside = False
        self.held = b""
        self.blocks = 0

    def feed(self, chunk: bytes, final: bool) -> bytes:
        data = self.held + chunk
        cut = len(data)
        if not final:
            cut = max(0, len(data) - _MARKER_TAIL)
            window = (max(0, cut - _MARKER_TAIL), min(len(data), cut + _MARKER_TAIL))
            for pattern in (_PEM_BEGIN, _PEM_END):
                for m in pattern.finditer(data, *window):
                    if m.start() < cut < m.end():
                        cut = m.start()
        ready, self.held = bytearray(data[:cut]), data[cut:]
        pos = 0
        while pos < len(ready):
            if not self.inside:
                m = _PEM_BEGIN.search(ready, pos)
                if not m:
                    break
                self.inside, pos = True, m.end()
                self.blocks += 1
            else:
                m = _PEM_END.search(ready, pos)
                end = m.start() if m else len(ready)
                ready[pos:end] = re.sub(rb"[^\r\n]", b"X", bytes(ready[pos:end]))
                if m:
                    self.inside, pos = False, m.end()
                else:
                    pos = len(ready)
        return bytes(ready)

    def reader(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        def scrubbed_read(n: int) -> bytes:
            while True:
                chunk = read(n)
                out = self.feed(chunk, final=not chunk)
                if out or not chunk:
                    return out
        return scrubbed_read


class Redactor:
    def __init__(self, secrets: Secrets, include_secrets: bool = False):
        self.include_secrets = include_secrets
        self.withheld_globs = secrets.withheld_paths
        self.stream_fields = {k: frozenset(v) for k, v in secrets.record_fields.items()}
        self._env_name = re.compile("|".join(f"(?:{p})" for p in secrets.env_name_patterns) or "$^", re.I)
        self._env_value = re.compile("|".join(f"(?:{p})" for p in secrets.env_value_patterns) or "$^")
        self.redactions = 0

    def withheld(self, path: str) -> bool:
        return not self.include_secrets and any(fnmatch.fnmatchcase(path, g) for g in self.withheld_globs)

    def secret_env_value(self, name: str, value: str) -> bool:
        return bool(self._env_name.search(name) or self._env_value.search(value))

    def record(self, data: dict[str, Any], stream: str = "") -> dict[str, Any]:
        if self.include_secrets:
            return data
        dropped = self.stream_fields.get(stream)
        if dropped:
            self.redactions += sum(1 for k in data if k in dropped)
            data = {k: (REDACTED if k in dropped else v) for k, v in data.items()}
        return self._walk(data)

    def _walk(self, value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in SECRET_FIELDS:
                    self.redactions += 1
                    continue
                if k in ("environ", "environment") and isinstance(v, dict):
                    out[k] = {name: self._env(name, val) for name, val in v.items()}
                else:
                    out[k] = self._walk(v, k)
            return out
        if isinstance(value, list):
            return [self._walk(v, key) for v in value]
        if isinstance(value, str) and "PRIVATE KEY" in value:
            scrubbed = _PEM_BLOCK_TEXT.sub(lambda m: m.group(1) + REDACTED + (m.group(4) or ""), value)
            if scrubbed != value:
                self.redactions += 1
            return scrubbed
        return value

    def _env(self, name: str, value: Any) -> Any:
        if isinstance(value, str) and self.secret_env_value(name, value):
            self.redactions += 1
            return REDACTED
        return self._walk(value, name)
