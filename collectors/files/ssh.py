"""SSH: authorized_keys (options parsed; AuthorizedKeysFile honoured), known_hosts, configs, host
public keys, and private keys described (type, encrypted, fingerprint) but never shipped by default."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import struct
from collections.abc import Iterator

from collectors.base import Context, Item, Problem, Record
from collectors.files.fsread import copy_file, listdir, read_capped, walk_glob
from collectors.files.homes import Home, homes
from collectors.util import text

PRIVATE_HEADER = re.compile(rb"-----BEGIN ((?:[A-Z0-9]+ )*)PRIVATE KEY-----")
OPENSSH_MAGIC = b"openssh-key-v1\0"
NOT_PRIVATE = {"authorized_keys", "authorized_keys2", "known_hosts", "known_hosts.old", "config", "environment", "rc"}


# ---- key blobs -------------------------------------------------------------------------------

def _ssh_string(blob: bytes, pos: int) -> tuple[bytes, int]:
    if pos + 4 > len(blob):
        raise ValueError("truncated")
    (length,) = struct.unpack(">I", blob[pos:pos + 4])
    if pos + 4 + length > len(blob):
        raise ValueError("truncated")
    return blob[pos + 4:pos + 4 + length], pos + 4 + length


def fingerprint(blob: bytes) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def key_bits(blob: bytes) -> int | None:
    try:
        key_type, pos = _ssh_string(blob, 0)
        name = key_type.decode("ascii", "replace")
        if name.startswith("ssh-rsa"):
            _e, pos = _ssh_string(blob, pos)
            n, _ = _ssh_string(blob, pos)
            return int.from_bytes(n, "big").bit_length()
        if name.startswith("ssh-dss"):
            p, _ = _ssh_string(blob, pos)
            return int.from_bytes(p, "big").bit_length()
        if "ed25519" in name:
            return 256
        if "ed448" in name:
            return 456
        m = re.search(r"nistp(\d+)", name)
        return int(m.group(1)) if m else None
    except ValueError:
        return None


def decode_key(key_type: str, b64: str) -> bytes | None:
    """The key blob if ``b64`` decodes to a blob that names ``key_type`` itself; else None."""
    try:
        blob = base64.b64decode(b64, validate=True)
        embedded, _ = _ssh_string(blob, 0)
    except (binascii.Error, ValueError):
        return None
    return blob if embedded.decode("ascii", "replace") == key_type else None


def split_options(line: str) -> tuple[str, str]:
    """Split an authorized_keys line into (options, rest), honouring quotes and \\" inside them."""
    in_quotes = False
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\" and in_quotes and i + 1 < len(line):
            i += 2
            continue
        if c == '"':
            in_quotes = not in_quotes
        elif c in " \t" and not in_quotes:
            return line[:i], line[i:].lstrip()
        i += 1
    return line, ""


def parse_options(options: str) -> list[dict]:
    out = []
    for m in re.finditer(r'([^,=]+)(?:="((?:[^"\\]|\\.)*)")?(?:,|$)', options):
        if not m.group(1):
            continue
        item = {"name": m.group(1).strip()}
        if m.group(2) is not None:
            item["value"] = m.group(2).replace('\\"', '"')
        out.append(item)
    return out


def parse_key_line(line: str) -> dict | None:
    """One authorized_keys / *.pub line -> {key_type, fingerprint, bits, comment, options}; None if not a key."""
    words = line.split(None, 2)
    if len(words) >= 2 and (blob := decode_key(words[0], words[1])) is not None:
        options_text, key_type, b64, comment = "", words[0], words[1], words[2] if len(words) > 2 else ""
    else:
        options_text, rest = split_options(line)
        words = rest.split(None, 2)
        if len(words) < 2 or (blob := decode_key(words[0], words[1])) is None:
            return None
        key_type, b64, comment = words[0], words[1], words[2] if len(words) > 2 else ""
    return {"key_type": key_type, "fingerprint": fingerprint(blob), "bits": key_bits(blob),
            "comment": comment.strip(), "options": parse_options(options_text), "options_text": options_text,
            "public_key": f"{key_type} {b64}"}


# ---- private keys ----------------------------------------------------------------------------

def _der(data: bytes, pos: int) -> tuple[int, bytes, int]:
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    return tag, data[pos:pos + length], pos + length


def _rsa_from_pkcs1(der: bytes) -> bytes | None:
    tag, body, _ = _der(der, 0)
    if tag != 0x30:
        return None
    _, _version, pos = _der(body, 0)
    _, n, pos = _der(body, pos)
    _, e, _ = _der(body, pos)

    def mpint(value: bytes) -> bytes:
        value = value.lstrip(b"\0")
        if value and value[0] & 0x80:
            value = b"\0" + value
        return struct.pack(">I", len(value)) + value

    return struct.pack(">I", 7) + b"ssh-rsa" + mpint(e) + mpint(n)


def describe_private_key(data: bytes) -> dict | None:
    m = PRIVATE_HEADER.search(data[:4096])
    if not m:
        if data.lstrip().startswith(b"PuTTY-User-Key-File-"):
            first = text(data.lstrip().split(b"\n", 1)[0])
            enc = re.search(rb"Encryption: (\S+)", data)
            return {"format": "putty", "key_type": first.split(":", 1)[-1].strip(),
                    "encrypted": bool(enc and enc.group(1) != b"none")}
        return None
    label = text(m.group(1)).strip()
    end = data.find(b"-----END", m.end())
    body = data[m.end():end if end > 0 else len(data)]
    headers = b"Proc-Type: 4,ENCRYPTED" in body
    b64 = b"".join(line for line in body.split(b"\n") if b":" not in line).replace(b"\r", b"")
    info: dict = {"format": {"OPENSSH": "openssh", "RSA": "pem-rsa", "EC": "pem-ec", "DSA": "pem-dsa",
                             "ENCRYPTED": "pkcs8-encrypted", "": "pkcs8"}.get(label, label.lower()),
                  "encrypted": headers or label == "ENCRYPTED", "key_type": None, "fingerprint": None}
    try:
        raw = base64.b64decode(b64)
    except (binascii.Error, ValueError):
        info["error"] = "body is not base64"
        return info
    try:
        if label == "OPENSSH" and raw.startswith(OPENSSH_MAGIC):
            pos = len(OPENSSH_MAGIC)
            cipher, pos = _ssh_string(raw, pos)
            kdf, pos = _ssh_string(raw, pos)
            _kdfopts, pos = _ssh_string(raw, pos)
            (count,) = struct.unpack(">I", raw[pos:pos + 4])
            public, _ = _ssh_string(raw, pos + 4)
            key_type, _ = _ssh_string(public, 0)
            info.update(cipher=text(cipher), kdf=text(kdf), keys=count, encrypted=cipher != b"none",
                        key_type=text(key_type), fingerprint=fingerprint(public), bits=key_bits(public))
        elif label == "RSA" and not info["encrypted"]:
            blob = _rsa_from_pkcs1(raw)
            if blob:
                info.update(key_type="ssh-rsa", fingerprint=fingerprint(blob), bits=key_bits(blob))
        elif label == "EC":
            info["key_type"] = "ecdsa"
        elif label == "DSA":
            info["key_type"] = "ssh-dss"
    except (ValueError, IndexError, struct.error):
        info["error"] = "key structure not understood"
    return info


# ---- the collector ---------------------------------------------------------------------------

def _config_lines(ctx: Context, path: str, depth: int = 0) -> Iterator[tuple[str, int, str, str, str | None] | Problem]:
    """(file, line, keyword, value, match-context) for sshd_config / ssh_config, following Include."""
    try:
        data, _, _ = read_capped(ctx, path, 1 << 20)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read", path)
        return
    match = None
    for number, line in enumerate(text(data).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\S+?)\s*(?:=\s*|\s+)(.*)$", line)
        if not m:
            continue
        keyword, value = m.group(1).lower(), m.group(2).strip()
        if keyword in ("match", "host"):
            match = value
        yield path, number, keyword, value, match
        if keyword == "include" and depth < 8:
            for pattern in value.split():
                pattern = pattern if pattern.startswith("/") else "/etc/ssh/" + pattern
                for hit in sorted(h for h in walk_glob(ctx, pattern) if isinstance(h, str)):
                    yield from _config_lines(ctx, hit, depth + 1)


def _expand_akf(pattern: str, home: Home) -> str:
    out = pattern.replace("%%", "\0").replace("%h", home.path).replace("%u", home.user or "")
    out = out.replace("%U", str(home.uid) if home.uid is not None else "").replace("\0", "%")
    return out if out.startswith("/") else home.path.rstrip("/") + "/" + out


def collect(ctx: Context) -> Iterator[Item]:
    cap = int(ctx.opt("cap_bytes", 4 << 20))
    akf_patterns: list[str] = []
    for config in ctx.opt("sshd_configs", []) + ctx.opt("ssh_configs", []):
        for hit in walk_glob(ctx, config) if any(c in config for c in "*?[") else [config]:
            if isinstance(hit, Problem):
                yield hit
                continue
            files = set()
            for item in _config_lines(ctx, hit):
                if isinstance(item, Problem):
                    yield item
                    continue
                path, number, keyword, value, match = item
                files.add(path)
                kind = "sshd_config" if "sshd" in hit else "ssh_config"
                yield Record("ssh_config", {"kind": kind, "path": path, "line": number, "keyword": keyword,
                                            "value": value, "match": match})
                if kind == "sshd_config" and keyword == "authorizedkeysfile":
                    akf_patterns.extend(v for v in value.split() if v.lower() != "none")
            for path in sorted(files):
                yield from copy_file(ctx, path, cap)
    if not akf_patterns:
        akf_patterns = list(ctx.opt("default_authorized_keys", [".ssh/authorized_keys", ".ssh/authorized_keys2"]))
    akf_patterns = list(dict.fromkeys(akf_patterns))

    user_homes = [h for h in homes(ctx) if isinstance(h, Home)]
    passwd_names = {h.user for h in user_homes if h.user}
    done: set[str] = set()
    for home in user_homes:
        ctx.check()
        candidates = [_expand_akf(p, home) for p in akf_patterns if home.user or "%u" not in p]
        candidates += [home.path.rstrip("/") + "/" + d for d in (".ssh/authorized_keys", ".ssh/authorized_keys2")]
        for path in dict.fromkeys(candidates):
            if path not in done:
                done.add(path)
                yield from _key_file(ctx, path, home.user, "authorized_keys", cap)
        yield from _user_ssh_dir(ctx, home, cap, done)
    # AuthorizedKeysFile with %u may name files for users without a home we saw
    for pattern in akf_patterns:
        if "%u" in pattern and pattern.startswith("/"):
            directory = os.path.dirname(pattern.replace("%%", "%"))
            if "%" not in directory:
                for hit in walk_glob(ctx, directory + "/*"):
                    if isinstance(hit, str) and hit not in done:
                        done.add(hit)
                        owner = os.path.basename(hit)
                        yield from _key_file(ctx, hit, owner if owner in passwd_names else None, "authorized_keys", cap)
    for pattern in ctx.opt("host_public_keys", []):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, str):
                yield from _key_file(ctx, hit, None, "host_public_key", cap)
    for pattern in ctx.opt("host_private_keys", []):
        for hit in walk_glob(ctx, pattern):
            if isinstance(hit, str):
                yield from _private_key(ctx, hit, None)
    for path in ("/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"):
        yield from _known_hosts(ctx, path, None, cap)


def _user_ssh_dir(ctx: Context, home: Home, cap: int, done: set[str]) -> Iterator[Item]:
    directory = home.path.rstrip("/") + "/.ssh"
    try:
        names = [name for name, _ in listdir(ctx, directory)]
    except OSError:
        return
    for name in names:
        path = f"{directory}/{name}"
        if path in done:
            continue
        done.add(path)
        if name.startswith("known_hosts"):
            yield from _known_hosts(ctx, path, home.user, cap)
        elif name.endswith(".pub"):
            yield from _key_file(ctx, path, home.user, "user_public_key", cap)
        elif name == "config":
            for item in _config_lines(ctx, path):
                if isinstance(item, Problem):
                    yield item
                else:
                    yield Record("ssh_config", {"kind": "user_ssh_config", "user": home.user, "path": item[0],
                                                "line": item[1], "keyword": item[2], "value": item[3],
                                                "match": item[4]})
            yield from copy_file(ctx, path, cap)
        elif name not in NOT_PRIVATE:
            yield from _private_key(ctx, path, home.user)


def _key_file(ctx: Context, path: str, user: str | None, kind: str, cap: int) -> Iterator[Item]:
    try:
        data, st, _ = read_capped(ctx, path, cap)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, f"cannot read {kind}", path)
        return
    for number, raw in enumerate(text(data).splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parsed = parse_key_line(line)
        rec = {"kind": kind, "user": user, "path": path, "line": number, "file_mode": oct(st.st_mode & 0o7777),
               "file_uid": st.st_uid, "file_mtime_ns": st.st_mtime_ns}
        if parsed is None:
            rec.update(error="not a recognised key line", text=line[:512])
        else:
            rec.update(parsed)
        yield Record("ssh_keys", rec)
    yield from copy_file(ctx, path, cap)


def _known_hosts(ctx: Context, path: str, user: str | None, cap: int) -> Iterator[Item]:
    try:
        data, _, _ = read_capped(ctx, path, cap)
    except FileNotFoundError:
        return
    except OSError as exc:
        yield Problem.from_os_error(exc, "cannot read known_hosts", path)
        return
    for number, raw in enumerate(text(data).splitlines(), 1):
        words = raw.split()
        if not words or words[0].startswith("#"):
            continue
        marker = words.pop(0) if words[0].startswith("@") else None
        if len(words) < 3:
            continue
        blob = decode_key(words[1], words[2])
        yield Record("known_hosts", {"user": user, "path": path, "line": number, "marker": marker,
                                     "hosts": words[0].split(","), "hashed": words[0].startswith("|1|"),
                                     "key_type": words[1], "fingerprint": fingerprint(blob) if blob else None,
                                     "comment": " ".join(words[3:])})
    yield from copy_file(ctx, path, cap)


def _private_key(ctx: Context, path: str, user: str | None) -> Iterator[Item]:
    try:
        data, st, _ = read_capped(ctx, path, 1 << 20, facts_only=True)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            yield Problem.from_os_error(exc, "cannot read possible private key", path)
        return
    info = describe_private_key(data)
    if info is None:
        return
    if info.get("fingerprint") is None:
        pub = _sibling_public(ctx, path)
        if pub:
            info.update(fingerprint=pub["fingerprint"], key_type=info.get("key_type") or pub["key_type"],
                        fingerprint_from=path + ".pub", bits=pub.get("bits"))
    info.update(path=path, user=user, file_mode=oct(st.st_mode & 0o7777), file_uid=st.st_uid,
                file_mtime_ns=st.st_mtime_ns, size=st.st_size)
    if ctx.include_secrets:
        info["private_key_body"] = text(data)
    yield Record("ssh_private_keys", info)
    yield from copy_file(ctx, path, 1 << 20)  # the sink withholds it unless --include-secrets


def _sibling_public(ctx: Context, path: str) -> dict | None:
    try:
        data, _, _ = read_capped(ctx, path + ".pub", 65536)
    except OSError:
        return None
    return parse_key_line(text(data).strip())

