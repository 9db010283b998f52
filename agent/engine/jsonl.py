"""One record as one JSON Lines line: the sink's encoding, shared by the writer and the collectors' children."""

from __future__ import annotations

import json
from typing import Any


def encode_line(record: dict[str, Any]) -> bytes:
    """Compact JSON, UTF-8 (an unpaired surrogate from a host's bytes escaped, never an error), values JSON does
    not know written as their str(), one newline."""
    line = json.dumps(record, ensure_ascii=False, default=str, separators=(",", ":"))
    return line.encode("utf-8", "backslashreplace") + b"\n"
