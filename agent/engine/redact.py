"""Secrets stay home: the one place, just before the bundle writer, where records and file copies
are stripped of secret material (rules in specs/secrets.toml and the rule sets it imports).
Collectors report what they see; this module decides what leaves the host.

Four doors, one rule book:

- ``Redactor.withheld(path)``: files never copied raw, by their resolved path (globs);
- ``Redactor.withheld_content(head)`` / :func:`content_rule`: files withheld by their first bytes
  (a private key of any kind, PEM, OpenSSH, PuTTY or DER; an OpenVPN static key; a shadow-format file);
- ``Redactor.record(data)``: every string of every record; a secret *value* is masked in place
  (``mysql -p****``), the command kept, and the record says which field and which rule
  (``"redacted": [{"field": "command", "rule": "mysql-password-arg"}]``);
- :class:`SecretScrubber` (``PemScrubber``): raw copies, streamed; key blocks overwritten, secret values
  overwritten with ``*``, the length kept byte for byte (the tar header declares it in advance).
"""

from __future__ import annotations

import bisect
import fnmatch
import functools
import hashlib
import json
import math
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from agent.engine.plan import Secrets, load_secrets

REDACTED = "<redacted>"
MASK = "****"  # what replaces a secret value in a record (its length is not kept: it would tell)
# Record fields that carry secret material by construction (collectors set them, we drop them).
SECRET_FIELDS = frozenset({"password_hash", "private_key_body"})
CONTENT_BYTES = 4096  # how much of a file's start the content rules look at
HOLD_BYTES = 64 << 10  # longest incomplete line the scrubber holds back before processing it anyway
_MARKER_TAIL = 64  # longest block marker we must be able to see across a forced cut
_CLEAN_CACHE = 65536  # short record strings known to hold no secret (user names, shells, paths...)


# ---- rules: RE2 -> Python, keywords, entropy, allowlists ----------------------------------------------

class Unsupported(ValueError):
    """A regex construct Python's re cannot express (the rule is dropped and counted)."""


_POSIX_CLASSES = {"alnum": "a-zA-Z0-9", "alpha": "a-zA-Z", "digit": "0-9", "lower": "a-z", "upper": "A-Z",
                  "space": r" \t\n\r\f\v", "xdigit": "0-9A-Fa-f", "word": r"\w", "punct": r"!-/:-@\[-`{-~",
                  "blank": r" \t", "cntrl": r"\x00-\x1f\x7f", "print": r" -~", "graph": r"!-~",
                  "ascii": r"\x00-\x7f"}
_INLINE_FLAGS = re.compile(r"\(\?([a-zA-Z]*)(?:-([a-zA-Z]*))?\)")


def convert_re2(pattern: str) -> str:
    """Go RE2 syntax to Python ``re`` syntax, for the constructs gitleaks' rules use.

    RE2 lets a flag group appear mid-pattern (``p8e-(?i)[a-z]``): it applies up to the end of the
    enclosing group, across its ``|`` branches. Python only takes global flags at the very start, so
    such a group becomes a scoped one, closed before each ``|`` and ``)`` of its group and reopened
    after each ``|``. ``\\z`` is ``\\Z``; POSIX classes ``[[:alnum:]]`` are spelled out; ``[``, ``&``,
    ``~``, ``|`` are escaped inside classes (Python reserves them for set operations). Unicode classes
    (``\\p``), ``\\Q..\\E`` and ``\\C`` raise :class:`Unsupported`."""
    out: list[str] = []
    stack: list[list[str]] = [[]]  # per open group: the scoped flag groups opened inside it
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1:i + 2]
            if nxt in ("p", "P", "Q", "E", "C", ""):
                raise Unsupported(f"\\{nxt}")
            out.append("\\Z" if nxt == "z" else c + nxt)
            i += 2
        elif c == "[":
            j = i + 1
            body = ["["]
            if pattern[j:j + 1] == "^":
                body.append("^")
                j += 1
            if pattern[j:j + 1] == "]":
                body.append("\\]")
                j += 1
            while j < n and pattern[j] != "]":
                ch = pattern[j]
                if ch == "\\":
                    if pattern[j + 1:j + 2] in ("p", "P", ""):
                        raise Unsupported("\\p in a class")
                    body.append(pattern[j:j + 2])
                    j += 2
                    continue
                m = re.match(r"\[:(\^?)([a-z]+):\]", pattern[j:])
                if m:
                    if m.group(1) or m.group(2) not in _POSIX_CLASSES:
                        raise Unsupported(m.group(0))
                    body.append(_POSIX_CLASSES[m.group(2)])
                    j += m.end()
                    continue
                body.append("\\" + ch if ch in "[&~|" else ch)
                j += 1
            if j >= n:
                raise Unsupported("unterminated class")
            out.append("".join(body) + "]")
            i = j + 1
        elif c == "(":
            m = _INLINE_FLAGS.match(pattern, i)
            if m and i > 0:
                scoped = "(?" + m.group(1) + ("-" + m.group(2) if m.group(2) else "") + ":"
                out.append(scoped)
                stack[-1].append(scoped)
                i = m.end()
            elif m:
                out.append(m.group(0))
                i = m.end()
            else:
                out.append(c)
                stack.append([])
                i += 1
        elif c == ")":
            if len(stack) == 1:
                raise Unsupported("unbalanced )")
            out.append(")" * len(stack.pop()) + ")")
            i += 1
        elif c == "|":
            out.append(")" * len(stack[-1]) + "|" + "".join(stack[-1]))
            i += 1
        else:
            out.append(c)
            i += 1
    if len(stack) != 1:
        raise Unsupported("unbalanced (")
    out.append(")" * len(stack[0]))
    return "".join(out)


def _compile(pattern: str, syntax: str) -> re.Pattern[str]:
    return re.compile(convert_re2(pattern) if syntax == "re2" else pattern, re.ASCII)


# gitleaks opens ~100 rules with a lazy identifier run, "(?i)[\w.-]{0,50}?(?:adafruit)...": it only
# widens the match to the left (the secret is a group), and it makes the regex try every position
# (4x slower). It is taken off and the match widened back by hand where an allowlist reads the match.
_LAZY_LEAD = re.compile(r"^(\(\?[a-zA-Z]+\))?\[\\w\.-\]\{0,(\d+)\}\?")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_IDENT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")


def _convert_rule(pattern: str, syntax: str) -> tuple[str, int]:
    """(the pattern in Python re syntax, how far the match may reach left of where it starts: the lead taken off).
    Raises Unsupported for RE2 syntax Python re has no equivalent of."""
    if syntax == "re2":
        pattern = convert_re2(pattern)
    lead = 0
    m = _LAZY_LEAD.match(pattern)
    if m:
        pattern, lead = (m.group(1) or "") + pattern[m.end():], int(m.group(2))
    return pattern, lead


def shannon_entropy(text: str) -> float:
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in (text.count(ch) for ch in set(text))) if n else 0.0


@dataclass(eq=False)
class Allowlist:
    """gitleaks' allowlist, the parts that speak of a value (paths and commits never apply here)."""
    target: str = "secret"  # secret | match | line
    regexes: tuple[re.Pattern[str], ...] = ()
    stopwords: tuple[str, ...] = ()
    condition: str = "OR"
    never: bool = False  # it needs a path or a commit to allow anything

    @classmethod
    def from_spec(cls, raw: dict[str, Any], syntax: str) -> Allowlist:
        condition = str(raw.get("condition", "OR")).upper()
        needs_repo = bool(raw.get("paths") or raw.get("commits"))
        regexes = tuple(_compile(r, syntax) for r in raw.get("regexes", []))
        stopwords = tuple(str(s).lower() for s in raw.get("stopwords", []))
        never = (needs_repo and condition == "AND") or not (regexes or stopwords)
        return cls(str(raw.get("regexTarget", "secret")), regexes, stopwords, condition, never)

    def allows(self, secret: str, match: str, line: str) -> bool:
        if self.never:
            return False
        target = {"match": match, "line": line}.get(self.target, secret)
        checks = []
        if self.regexes:
            checks.append(any(r.search(target) for r in self.regexes))
        if self.stopwords:
            low = secret.lower()
            checks.append(any(w in low for w in self.stopwords))
        return all(checks) if self.condition == "AND" else any(checks)


_NEVER = re.compile("(?!)")


@dataclass(eq=False)
class Rule:
    id: str
    pattern: str  # Python re syntax (_convert_rule); compiled on first use: see regex
    keywords: tuple[str, ...] = ()
    secret_group: int = 0
    entropy: float = 0.0
    allowlists: tuple[Allowlist, ...] = ()
    source: str = "triagent"
    lead: int = 0  # see _convert_rule
    broken: str | None = None  # why the pattern did not compile (the rule then finds nothing)
    _compiled: re.Pattern[str] | None = field(default=None, repr=False)

    @property
    def regex(self) -> re.Pattern[str]:
        """Compiled when a keyword of the rule is first seen, not at start: a run meets a few dozen of the ~240
        rules, and compiling them all took 0.045 s of the one busy core before the first artifact (and again in
        every process that had not yet). tests/agent/engine/test_redact.py compiles the whole book."""
        compiled = self._compiled
        if compiled is None:
            try:
                compiled = re.compile(self.pattern, re.ASCII)
            except re.error as exc:  # an upstream rule newer than our converter: dropped, and said so
                self.broken, compiled = f"does not compile in Python re: {exc}", _NEVER
            self._compiled = compiled
        return compiled

    def secrets(self, text: str, start: int, end: int, allow: tuple[Allowlist, ...]) -> Iterable[tuple[int, int]]:
        """Spans of the secrets this rule finds in text[start:end] (the masked part of each match)."""
        for m in self.regex.finditer(text, start, end):
            if self.secret_group:
                s, e = m.span(self.secret_group) if self.secret_group <= (self.regex.groups or 0) else (-1, -1)
            else:
                s, e = m.span()
                for g in range(1, (self.regex.groups or 0) + 1):  # gitleaks: the first non-empty group
                    gs, ge = m.span(g)
                    if ge > gs >= 0:
                        s, e = gs, ge
                        break
            if e <= s or _CONTROL.search(text, m.start(), m.end()):  # binary bytes, not something typed
                continue
            secret = text[s:e]
            if self.entropy and (shannon_entropy(secret) <= self.entropy
                                 or (self.id.startswith("generic") and not any(c.isdigit() for c in secret))):
                continue
            if allow or self.allowlists:
                line_start = text.rfind("\n", 0, m.start()) + 1
                line_end = text.find("\n", m.end())
                line = text[line_start:line_end if line_end >= 0 else len(text)]
                ms = m.start()
                floor = max(start, line_start, ms - self.lead)
                while ms > floor and text[ms - 1] in _IDENT:
                    ms -= 1
                if any(a.allows(secret, text[ms:m.end()], line) for a in (*self.allowlists, *allow)):
                    continue
            if (s, e) == m.span():  # a token found whole (ghp_..., AKIA..., xoxb-...): keep its kind visible
                low = secret.lower()
                keep = max((len(k) for k in self.keywords if low.startswith(k) and len(k) + 8 <= len(secret)),
                           default=0)
                if keep and secret[keep:keep + 1] in ("-", "_", "."):
                    keep += 1
                s += keep
            yield s, e


def _trie_regex(words: Iterable[str]) -> str:
    """One alternation, factored by prefix, that prefers the longest word at a position."""
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def build(node: dict[str, dict]) -> str:
        alts = [re.escape(ch) + build(node[ch]) for ch in sorted(k for k in node if k)]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return "(?:" + body + ")?" if "" in node else body

    return build(trie)


class RuleSet:
    """Compiled value rules with a keyword index: a rule's regex only runs on the lines (of a record
    string, of a raw copy's chunk) that hold one of its keywords, found in one pass for all rules."""

    def __init__(self, secrets: Secrets):
        self.rules: list[Rule] = []
        self._dropped: list[tuple[str, str]] = []  # (rule id, why), known when the book is read
        for raw in secrets.rules:
            rid = str(raw.get("id"))
            if not raw.get("regex"):
                self._dropped.append((rid, "no regex (a path-only rule)"))
                continue
            try:
                pattern, lead = _convert_rule(raw["regex"], raw.get("syntax", "python"))
                allow = tuple(Allowlist.from_spec(a, raw.get("syntax", "python")) for a in raw.get("allowlists", []))
            except (Unsupported, re.error) as exc:
                self._dropped.append((rid, f"does not convert to Python re: {exc}"))
                continue
            self.rules.append(Rule(rid, pattern, tuple(str(k).lower() for k in raw.get("keywords", [])),
                                   int(raw.get("secretGroup", 0) or 0), float(raw.get("entropy", 0) or 0),
                                   allow, str(raw.get("source", "")), lead))
        self.allow = tuple(Allowlist.from_spec(a, a.get("syntax", "python")) for a in secrets.allowlists)
        self.always = [i for i, r in enumerate(self.rules) if not r.keywords]
        keywords = sorted({k for r in self.rules for k in r.keywords})
        by_keyword: dict[str, set[int]] = {k: set() for k in keywords}
        for i, r in enumerate(self.rules):
            for k in r.keywords:
                by_keyword[k].add(i)
        # the longest keyword found at a position stands for every keyword that is a prefix of it
        self._rules_of = {k: frozenset(i for p in keywords if k.startswith(p) for i in by_keyword[p])
                          for k in keywords}
        trie = _trie_regex(keywords) if keywords else "(?!)"
        self._gate = re.compile(trie)

    @property
    def dropped(self) -> list[tuple[str, str]]:
        """(rule id, why) of the rules that find nothing: not converted, or (seen once compiled) not compiled."""
        return self._dropped + [(r.id, r.broken) for r in self.rules if r.broken is not None]

    def _hits(self, low: str) -> list[tuple[int, str]]:
        """(position, longest keyword there) for every position where a keyword starts: one scan,
        then the positions inside each hit (a keyword may start inside another: "key" in "apikey")."""
        gate = self._gate
        hits = []
        for m in gate.finditer(low):
            start, end = m.span()
            hits.append((start, m.group()))
            for q in range(start + 1, end):
                inner = gate.match(low, q)
                if inner is not None:
                    hits.append((q, inner.group()))
        return hits

    def spans(self, text: str, low: str | None = None) -> list[tuple[int, int, str]]:
        """Non-overlapping secret spans (start, end, rule id), sorted; the earlier rule wins an overlap."""
        hits = self._hits(text.lower() if low is None else low)
        if not hits and not any(self.rules[i].regex.search(text) for i in self.always):
            return []  # no keyword, and no keyword-less rule matches anywhere: one C-level search each said so
        lines: dict[str, set[tuple[int, int]]] = {}  # keyword -> the lines that hold it
        if "\n" in text:
            for pos, kw in hits:
                line_end = text.find("\n", pos)
                lines.setdefault(kw, set()).add((text.rfind("\n", 0, pos) + 1, len(text) if line_end < 0 else line_end))
        else:
            lines = {kw: {(0, len(text))} for _, kw in hits}
        ranges: dict[int, set[tuple[int, int]]] = {}
        for kw, where in lines.items():
            for i in self._rules_of[kw]:
                ranges.setdefault(i, set()).update(where)
        for i in self.always:
            ranges[i] = {(0, len(text))}
        found: list[tuple[int, int, str]] = []  # sorted, non-overlapping
        for i in sorted(ranges):
            rule = self.rules[i]
            for start, end in _merged(ranges[i]):
                for s, e in rule.secrets(text, start, end, self.allow):
                    at = bisect.bisect_left(found, (s,))
                    if (at and found[at - 1][1] > s) or (at < len(found) and found[at][0] < e):
                        continue
                    found.insert(at, (s, e, rule.id))
        return found


def _merged(ranges: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """Line ranges, adjacent ones joined (one regex call for a run of lines)."""
    out: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


_RULESETS: dict[str, RuleSet] = {}
_RULESETS_LOCK = threading.Lock()


def _fresh_rulesets_lock() -> None:
    """In a forked child (agent/engine/child.py), a lock another thread of the parent held is held for ever."""
    global _RULESETS_LOCK
    _RULESETS_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_fresh_rulesets_lock)


def ruleset_for(secrets: Secrets) -> RuleSet:
    """Reading some 240 rules and building their keyword gate: once per rule book per process (each rule's regex is
    compiled on first use, see Rule.regex)."""
    key = hashlib.sha256(json.dumps([secrets.rules, secrets.allowlists], sort_keys=True, default=str)
                         .encode()).hexdigest()
    with _RULESETS_LOCK:
        rs = _RULESETS.get(key)
        if rs is None:
            rs = _RULESETS[key] = RuleSet(secrets)
        return rs


@functools.lru_cache(maxsize=1)
def default_ruleset() -> RuleSet:
    """The rule book of specs/ (what ``PemScrubber()`` uses): read and compiled once per process."""
    return ruleset_for(load_secrets())


# ---- blocks: key material between markers -----------------------------------------------------------

@dataclass(frozen=True)
class _BlockKind:
    rule: str
    begin: str  # regex (bytes-compatible ASCII) of the opening marker
    end: str  # regex of the closing marker; {tag} is replaced by the opening's "tag" group
    fill: bytes


_BLOCK_KINDS = (
    _BlockKind("private-key-block", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----",
               r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----", b"X"),
    _BlockKind("openvpn-static-key", r"-----BEGIN OpenVPN [A-Za-z0-9 _-]{1,60}?-----",
               r"-----END OpenVPN [A-Za-z0-9 _-]{1,60}?-----", b"*"),
    _BlockKind("openvpn-inline-key", r"<(?P<tag>secret|tls-auth|tls-crypt|tls-crypt-v2)>", r"</{tag}>", b"*"),
    _BlockKind("putty-private-key", r"Private-Lines: *\d+", r"Private-(?:MAC|Hash):", b"X"),
)
_BEGIN_BYTES = re.compile("|".join(f"(?P<k{i}>{k.begin})" for i, k in enumerate(_BLOCK_KINDS)).encode())
_BEGIN_TEXT = re.compile(_BEGIN_BYTES.pattern.decode())
_END_CACHE: dict[tuple[int, str], tuple[re.Pattern[bytes], re.Pattern[str]]] = {}
_BLOCK_GATE = re.compile("private key|openvpn|<secret>|<tls-|private-lines:")  # on lower-case text


_BEGIN_LITERALS = (b"-----BEGIN ", b"<secret>", b"<tls-", b"Private-Lines:")


def _next_begin(buf: bytes | bytearray, pos: int) -> re.Match[bytes] | None:
    """_BEGIN_BYTES.search, found by its literal openings first (a plain search tries every byte)."""
    while True:
        found = [i for i in (buf.find(lit, pos) for lit in _BEGIN_LITERALS) if i >= 0]
        if not found:
            return None
        at = min(found)
        m = _BEGIN_BYTES.match(buf, at)
        if m is not None:
            return m
        pos = at + 1


def _block_end(kind: int, tag: str) -> tuple[re.Pattern[bytes], re.Pattern[str]]:
    key = (kind, tag)
    if key not in _END_CACHE:
        pattern = _BLOCK_KINDS[kind].end.replace("{tag}", re.escape(tag))
        _END_CACHE[key] = (re.compile(pattern.encode()), re.compile(pattern))
    return _END_CACHE[key]


def _opened(m: re.Match) -> tuple[int, str]:
    """(kind, tag) of a block's opening marker (the tag names an inline OpenVPN block's end)."""
    kind = int((m.lastgroup or "k2")[1:]) if m.lastgroup != "tag" else 2
    tag = m.group("tag") if kind == 2 else ""
    return kind, tag.decode("latin-1") if isinstance(tag, bytes) else tag


def _mask_blocks_text(text: str) -> tuple[str, list[str]]:
    """Key blocks inside a record string: the body becomes <redacted>, the markers stay."""
    out, pos, rules = [], 0, []
    while True:
        m = _BEGIN_TEXT.search(text, pos)
        if m is None:
            break
        kind, tag = _opened(m)
        end = _block_end(kind, tag)[1].search(text, m.end())
        out.append(text[pos:m.end()] + REDACTED)
        rules.append(_BLOCK_KINDS[kind].rule)
        pos = end.start() if end else len(text)
        if end is None:
            break
    out.append(text[pos:])
    return "".join(out), rules


# ---- whole files: content rules ----------------------------------------------------------------------

_PEM_BEGIN = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")
_OPENVPN_KEY = re.compile(rb"-----BEGIN OpenVPN [A-Za-z0-9 _-]{1,60}?-----")
_CRYPT_FIELD = re.compile(r"^[!*]*(?:\$(?:1|2[abxy]|5|6|7|y|gy|sha1|md5|apr1|argon2(?:id|i|d)|pbkdf2(?:-sha\d+)?)"
                          r"[$,][./A-Za-z0-9$=,+-]{8,}|[./0-9A-Za-z]{13})$", re.ASCII)
_COLON_RECORD = re.compile(rb"^[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?(?::[^:\n]*)+$")


def _der_length(buf: bytes, pos: int) -> tuple[int, int] | None:
    """(length, position of the value) of the DER length at pos, or None."""
    if pos >= len(buf):
        return None
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    count = first & 0x7F
    if count == 0 or count > 4 or pos + 1 + count > len(buf):
        return None
    return int.from_bytes(buf[pos + 1:pos + 1 + count], "big"), pos + 1 + count


def _der_items(buf: bytes, pos: int, limit: int, count: int) -> list[tuple[int, int, int]]:
    """Up to ``count`` (tag, value position, length) items from pos; a truncated value ends the list."""
    items = []
    while len(items) < count and pos + 2 <= min(limit, len(buf)):
        tag = buf[pos]
        got = _der_length(buf, pos + 1)
        if got is None:
            break
        length, value = got
        items.append((tag, value, length))
        pos = value + length
        if pos > len(buf):
            break
    return items


_OID_PBE = (bytes.fromhex("2a864886f70d0105"), bytes.fromhex("2a864886f70d010c01"))  # PKCS#5, PKCS#12 PBE
_OID_PKCS7 = bytes.fromhex("2a864886f70d0107")


def der_private_key(head: bytes) -> str | None:
    """A DER private key at the start of a file: PKCS#8 PrivateKeyInfo / OneAsymmetricKey, PKCS#8
    EncryptedPrivateKeyInfo, PKCS#1 RSAPrivateKey (and OpenSSL's DSA layout), SEC1 ECPrivateKey, PKCS#12.
    Only the first elements are parsed: a big key's end may lie beyond the head."""
    if len(head) < 16 or head[0] != 0x30:
        return None
    got = _der_length(head, 1)
    if got is None or got[0] < 32:
        return None
    length, body = got
    items = _der_items(head, body, body + length, 6)
    if len(items) < 2:
        return None
    (t0, v0, l0), (t1, v1, l1) = items[0], items[1]
    version = int.from_bytes(head[v0:v0 + l0], "big") if t0 == 0x02 and l0 == 1 and v0 + 1 <= len(head) else None
    if version in (0, 1) and t1 == 0x30 and len(items) >= 3 and items[2][0] == 0x04:
        inner = _der_items(head, v1, v1 + l1, 1)
        if inner and inner[0][0] == 0x06:
            return "der-pkcs8-private-key"
    if version == 0 and len(items) >= 4 and all(t == 0x02 for t, _, _ in items[1:4]) and l1 >= 64:
        return "der-pkcs1-private-key"
    if version == 1 and t1 == 0x04 and 16 <= l1 <= 72 and (len(items) == 2 or items[2][0] in (0xA0, 0xA1)):
        return "der-ec-private-key"
    if version == 3 and t1 == 0x30:
        inner = _der_items(head, v1, v1 + l1, 1)
        if inner and inner[0][0] == 0x06 and head[inner[0][1]:inner[0][1] + inner[0][2]].startswith(_OID_PKCS7):
            return "pkcs12"
    if t0 == 0x30 and t1 == 0x04:
        inner = _der_items(head, v0, v0 + l0, 1)
        if inner and inner[0][0] == 0x06:
            oid = head[inner[0][1]:inner[0][1] + inner[0][2]]
            if any(oid.startswith(p) for p in _OID_PBE):
                return "der-encrypted-private-key"
    return None


def _shadow_format(head: bytes) -> bool:
    """Lines name:field:... in the layout of shadow (9 fields), gshadow or opasswd (4) or htpasswd (2),
    at least one field a crypt(3) hash (every line, for the 2-field layout)."""
    lines = [ln for ln in head.split(b"\n")[:40] if ln.strip() and not ln.startswith(b"#")]
    if head[-1:] != b"\n" and len(lines) > 1:
        lines = lines[:-1]  # the head may cut the last line
    if not lines:
        return False
    records = [ln for ln in lines if _COLON_RECORD.match(ln)]
    if len(records) < 0.8 * len(lines):
        return False
    counts: dict[int, int] = {}
    for ln in records:
        counts[ln.count(b":") + 1] = counts.get(ln.count(b":") + 1, 0) + 1
    fields, n = max(counts.items(), key=lambda kv: kv[1])
    if fields not in (2, 4, 9) or n < 0.8 * len(lines):
        return False

    def hashed(ln: bytes) -> bool:
        parts = ln.decode("latin-1").split(":")[1:]
        return any(_CRYPT_FIELD.match(p) for part in parts for p in part.split(","))

    with_hash = sum(hashed(ln) for ln in records)
    return with_hash == len(records) if fields == 2 else with_hash > 0


def content_rule(head: bytes) -> str | None:
    """The content rule that makes a file a secret file to withhold entirely, from its first bytes
    (up to CONTENT_BYTES), or None."""
    head = head[:CONTENT_BYTES]
    der = der_private_key(head)
    if der:
        return der
    if head.startswith(b"openssh-key-v1\0"):
        return "openssh-private-key"
    if head[:4] in (b"\xfe\xed\xfe\xed", b"\xce\xce\xce\xce"):
        return "java-keystore"
    text = head.lstrip()
    if _PEM_BEGIN.match(text):
        return "private-key-block"
    if text.startswith(b"PuTTY-User-Key-File-"):
        return "putty-private-key"
    body = re.sub(rb"\A(?:[ \t]*(?:#[^\n]*)?\r?\n)*", b"", text)  # ta.key opens with comment lines
    if _OPENVPN_KEY.match(body):
        return "openvpn-static-key"
    if _shadow_format(head):
        return "shadow-file"
    return None


def starts_with_private_key(head: bytes) -> bool:
    """Kept for callers of the first version: any content rule withholds the file."""
    return content_rule(head) is not None


# ---- raw copies: the streaming scrubber -------------------------------------------------------------

_COMPRESSED = (b"\x1f\x8b", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd", b"BZh", b"\x04\x22\x4d\x18")


class SecretScrubber:
    """Streams a raw copy, keeping its length byte for byte: private-key and PuTTY bodies become 'X',
    OpenVPN key bodies '*' (newlines and markers kept); outside blocks, secret values found by the
    rules (typed passwords and tokens, crypt hashes, WireGuard keys...) become '*'.

    Lines are processed whole: an incomplete line is held back (up to ``hold`` bytes, then processed
    anyway, cut where no block marker is split), so ``reader(read)`` may return fewer bytes than asked.
    ``prime(before)`` takes the bytes that precede a tail window: a window that begins inside a key
    block starts "inside", and a line cut by the window's start is matched whole.
    ``blocks`` counts key blocks, ``masked`` counts masks by rule."""

    def __init__(self, rules: RuleSet | None = None, hold: int = HOLD_BYTES) -> None:
        self.rules = rules if rules is not None else default_ruleset()
        self.hold = max(hold, 2 * _MARKER_TAIL)
        self.block: tuple[int, str] | None = None  # (kind, tag) while inside a block
        self.held = b""
        self.context = b""  # the start of the line the next bytes continue: matched, never output
        self.blocks = 0
        self.masked: dict[str, int] = {}
        self.started = False
        self.values = True  # False for a compressed file: its bytes are not text

    @property
    def inside(self) -> bool:
        return self.block is not None

    def prime(self, before: bytes) -> None:
        """The bytes that precede the window (the pipeline passes up to 64 KiB of them)."""
        before = before[-HOLD_BYTES:]
        pos = 0
        while True:
            if self.block is None:
                m = _next_begin(before, pos)
                if m is None:
                    break
                self.block, pos = _opened(m), m.end()
            else:
                m = _block_end(*self.block)[0].search(before, pos)
                if m is None:
                    break
                self.block, pos = None, m.end()
        self.context = before[before.rfind(b"\n") + 1:][-4096:]
        self.started = True  # a window, not a file's start: no magic to look at

    def feed(self, chunk: bytes, final: bool) -> bytes:
        data = self.held + chunk
        if not self.started:
            if len(data) < 8 and not final:
                self.held = data
                return b""
            self.started = True
            self.values = not data.startswith(_COMPRESSED)
        cut = len(data)
        if not final:
            cut = data.rfind(b"\n") + 1
            if len(data) - cut > self.hold:
                cut = self._forced_cut(data)
        ready, self.held = data[:cut], data[cut:]
        if not ready:
            return b""
        context, self.context = self.context, b""
        buf = bytearray(context + ready)
        self._scrub(buf, len(context))
        if cut < len(data) and b"\n" not in ready:  # a long line goes on: keep its end as context
            self.context = (context + ready)[-4096:]
        elif cut < len(data):
            self.context = ready[ready.rfind(b"\n") + 1:][-4096:]
        return bytes(buf[len(context):])

    def _forced_cut(self, data: bytes) -> int:
        cut = len(data) - _MARKER_TAIL
        window = (max(0, cut - _MARKER_TAIL), min(len(data), cut + _MARKER_TAIL))
        for m in _BEGIN_BYTES.finditer(data, *window):
            if m.start() < cut < m.end():
                cut = m.start()
        if self.block is not None:
            for m in _block_end(*self.block)[0].finditer(data, *window):
                if m.start() < cut < m.end():
                    cut = m.start()
        low = max(0, cut - 1024)
        space = max(data.rfind(b" ", low, cut), data.rfind(b"\t", low, cut))
        return space + 1 if space > 0 else cut

    def _count(self, rule: str) -> None:
        self.masked[rule] = self.masked.get(rule, 0) + 1

    def _scrub(self, buf: bytearray, start: int) -> None:
        """Mask buf[start:] in place; buf[:start] is context (the state machine has seen it)."""
        outside: list[tuple[int, int]] = []
        # Markers wholly inside the context were seen before; one that ends past it (the window of a
        # tail copy began inside a marker) is seen now.
        pos = 0
        seg = 0 if self.block is None else -1  # where the current stretch outside blocks began
        while pos < len(buf):
            if self.block is None:
                if seg < 0:
                    seg = pos
                m = _next_begin(buf, pos)
                while m is not None and m.end() <= start:
                    m = _next_begin(buf, m.start() + 1)
                if m is None:
                    break
                outside.append((seg, m.start()))
                seg = -1
                self.block, pos = _opened(m), m.end()
                self.blocks += 1
                self._count(_BLOCK_KINDS[self.block[0]].rule)
            else:
                ends = _block_end(*self.block)[0]
                m = ends.search(buf, pos)
                while m is not None and m.end() <= start:
                    m = ends.search(buf, m.start() + 1)
                end = m.start() if m else len(buf)
                fill = _BLOCK_KINDS[self.block[0]].fill
                lo = max(pos, start)
                if end > lo:
                    buf[lo:end] = re.sub(rb"[^\r\n]", fill, bytes(buf[lo:end]))
                if m:
                    self.block, pos = None, m.end()
                    seg = pos
                else:
                    pos = len(buf)
        if self.block is None and seg >= 0:
            outside.append((seg, len(buf)))
        if not self.values:
            return
        for a, b in outside:
            if b - a < 6:
                continue
            text = bytes(buf[a:b]).decode("latin-1")
            for s, e, rule in self.rules.spans(text):
                s, e = max(a + s, start), a + e
                if e <= s:
                    continue
                buf[s:e] = re.sub(rb"[^\r\n]", b"*", bytes(buf[s:e]))
                self._count(rule)

    def reader(self, read: Callable[[int], bytes]) -> Callable[[int], bytes]:
        def scrubbed_read(n: int) -> bytes:
            while True:
                chunk = read(n)
                out = self.feed(chunk, final=not chunk)
                if out or not chunk:
                    return out
        return scrubbed_read


PemScrubber = SecretScrubber  # the first version's name: same constructor, feed, reader and blocks


# ---- records ------------------------------------------------------------------------------------------

class Redactor:
    def __init__(self, secrets: Secrets, include_secrets: bool = False):
        self.include_secrets = include_secrets
        self.withheld_globs = list(secrets.withheld_paths)
        self._withheld = self._globs(secrets.withheld_paths)
        self._excepted = self._globs(secrets.withheld_paths_except)
        self.stream_fields = {k: frozenset(v) for k, v in secrets.record_fields.items()}
        self._env_name = re.compile("|".join(f"(?:{p})" for p in secrets.env_name_patterns) or "$^", re.I)
        self._env_value = re.compile("|".join(f"(?:{p})" for p in secrets.env_value_patterns) or "$^")
        self.rules = ruleset_for(secrets)
        self.redactions = 0
        self._clean: set[str] = set()

    @staticmethod
    def _globs(globs: list[str]) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{fnmatch.translate(g)})" for g in globs) or "(?!)")

    # -- whole files

    def withheld(self, path: str) -> bool:
        return (not self.include_secrets and bool(self._withheld.match(path))
                and not self._excepted.match(path))

    @property
    def dropped_rules(self) -> list[tuple[str, str]]:
        return self.rules.dropped

    def withheld_content(self, head: bytes) -> str | None:
        """The content rule that withholds a file, from its first bytes (up to 4096), or None."""
        return None if self.include_secrets else content_rule(head)

    def scrubber(self) -> SecretScrubber:
        """A raw copy's scrubber with this redactor's rules."""
        return SecretScrubber(self.rules)

    # -- values

    def secret_env_value(self, name: str, value: str) -> bool:
        return bool(self._env_name.search(name) or self._env_value.search(value))

    def mask(self, text: str) -> tuple[str, list[str]]:
        """(text with secret values masked, the rules that masked something)."""
        if len(text) < 6 or text in self._clean:
            return text, []
        rules: list[str] = []
        low = text.lower()
        if _BLOCK_GATE.search(low) and _BEGIN_TEXT.search(text):
            text, rules = _mask_blocks_text(text)
            low = text.lower()
        spans = self.rules.spans(text, low)
        if not spans:
            if not rules and len(text) <= 512:
                if len(self._clean) >= _CLEAN_CACHE:
                    self._clean.clear()
                self._clean.add(text)
            return text, rules
        out, pos = [], 0
        for s, e, rule in spans:
            out.append(text[pos:s] + MASK)
            pos = e
            if rule not in rules:
                rules.append(rule)
        out.append(text[pos:])
        return "".join(out), rules

    def _mask_list(self, items: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
        """A list of strings (a command line's argv) is matched as one line, so that
        ``["mysql", "-pX"]`` and ``["curl", "-u", "a:b"]`` are seen as typed; masks map back."""
        joined = " ".join(items)
        if len(joined) < 6 or joined in self._clean:
            return items, []
        masked_whole, rules = self.mask(joined)
        if not rules:
            return items, []
        if any(_BEGIN_TEXT.search(i) for i in items):  # a key block in an argument: element by element
            out, notes = [], []
            for n, item in enumerate(items):
                new, r = self.mask(item)
                out.append(new)
                notes += [(n, x) for x in r]
            return out, notes
        spans = self.rules.spans(joined)
        bounds, pos = [], 0
        for item in items:
            bounds.append((pos, pos + len(item)))
            pos += len(item) + 1
        out, notes = list(items), []
        for n, (a, b) in enumerate(bounds):
            pieces = [(max(s, a) - a, min(e, b) - a, r) for s, e, r in spans if s < b and e > a]
            if not pieces:
                continue
            text, cursor, parts = items[n], 0, []
            for s, e, r in pieces:
                parts.append(text[cursor:s] + MASK)
                cursor = e
                if (n, r) not in notes:
                    notes.append((n, r))
            parts.append(text[cursor:])
            out[n] = "".join(parts)
        return out, notes

    def record(self, data: dict[str, Any], stream: str = "") -> dict[str, Any]:
        if self.include_secrets:
            return data
        dropped = self.stream_fields.get(stream)
        if dropped:
            self.redactions += sum(1 for k in data if k in dropped)
            data = {k: (REDACTED if k in dropped else v) for k, v in data.items()}
        notes: list[dict[str, str]] = []
        clean = self._walk(data, "", notes)
        if notes and isinstance(clean, dict):
            self.redactions += len(notes)
            previous = clean.get("redacted")
            clean["redacted"] = (previous if isinstance(previous, list) else []) + notes
        return clean

    def _walk(self, value: Any, path: str, notes: list[dict[str, str]]) -> Any:
        if isinstance(value, str):
            new, rules = self.mask(value)
            notes += [{"field": path, "rule": r} for r in rules]
            return new
        if isinstance(value, dict):
            out = {}
            for k, v in value.items():
                if k in SECRET_FIELDS:
                    self.redactions += 1
                elif isinstance(v, str):  # the common case, inline: most strings are short or seen before
                    if len(v) >= 6 and v not in self._clean:
                        v, rules = self.mask(v)
                        if rules:
                            child = f"{path}.{k}" if path else str(k)
                            notes += [{"field": child, "rule": r} for r in rules]
                    out[k] = v
                elif isinstance(v, (dict, list, tuple)):
                    child = f"{path}.{k}" if path else str(k)
                    if k in ("environ", "environment") and isinstance(v, dict):
                        out[k] = {name: self._env(name, val, f"{child}.{name}", notes) for name, val in v.items()}
                    else:
                        out[k] = self._walk(v, child, notes)
                else:
                    out[k] = v
            return out
        if isinstance(value, (list, tuple)):
            if len(value) > 1 and all(isinstance(v, str) for v in value):
                new, found = self._mask_list(list(value))
                notes += [{"field": f"{path}[{n}]", "rule": r} for n, r in found]
                return new
            return [self._walk(v, f"{path}[{n}]", notes) for n, v in enumerate(value)]
        return value

    def _env(self, name: str, value: Any, path: str, notes: list[dict[str, str]]) -> Any:
        if isinstance(value, str) and self.secret_env_value(str(name), value):
            notes.append({"field": path, "rule": "env-secret-name" if self._env_name.search(str(name))
                          else "env-secret-value"})
            return REDACTED
        return self._walk(value, path, notes)


__all__ = ["REDACTED", "MASK", "SECRET_FIELDS", "PemScrubber", "SecretScrubber", "Redactor", "RuleSet",
           "content_rule", "convert_re2", "default_ruleset", "der_private_key", "starts_with_private_key"]
