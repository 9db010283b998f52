"""Secrets stay home: private-key blocks in streams, secret-looking environment values."""

from __future__ import annotations

import io
import random

from agent.plan import load_secrets
from agent.redact import REDACTED, PemScrubber, Redactor, starts_with_private_key

KEY = (b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       b"QyNTUxOQAAACBTOPSECRETBODY\n-----END OPENSSH PRIVATE KEY-----\n")


def test_scrubber_keeps_length_and_removes_key_bodies_across_any_chunking():
    rng = random.Random(3)
    for _ in range(300):
        rsa_key = KEY.replace(b"OPENSSH ", b"RSA ")
        doc = b"x" * rng.randint(0, 300) + KEY + b"y\n" * rng.randint(0, 50) + rsa_key + b"z" * rng.randint(0, 3000)
        src = io.BytesIO(doc)
        scrubber = PemScrubber()
        read = scrubber.reader(lambda n, src=src: src.read(rng.randint(1, n)))
        out = b""
        while chunk := read(rng.randint(1, 200)):
            out += chunk
        assert len(out) == len(doc)
        assert b"TOPSECRETBODY" not in out and b"b3BlbnNzaC1rZXkt" not in out
        assert out.count(b"PRIVATE KEY-----") == 4 and scrubber.blocks == 2


def test_private_key_file_is_recognised():
    assert starts_with_private_key(b"\n" + KEY)
    assert starts_with_private_key(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIF")
    assert not starts_with_private_key(b"ssh-ed25519 AAAA comment\n")


def test_environment_and_fields_redacted_unless_opted_in():
    record = {"pid": 1, "environ": {"AWS_SECRET_ACCESS_KEY": "abc", "HOME": "/root", "X": "AKIAABCDEFGHIJKLMNOP",
                                     "DB": "postgres://u:pw@db/x", "MYSQL_PWD": "hunter2", "PATH": "/usr/bin"},
              "password_hash": "$6$x$y", "note": "see " + KEY.decode()}
    clean = Redactor(load_secrets()).record(record)
    env = clean["environ"]
    assert env["AWS_SECRET_ACCESS_KEY"] == REDACTED and env["X"] == REDACTED and env["DB"] == REDACTED
    assert env["MYSQL_PWD"] == REDACTED
    assert env["HOME"] == "/root" and env["PATH"] == "/usr/bin"
    assert "password_hash" not in clean and "TOPSECRETBODY" not in clean["note"]
    assert Redactor(load_secrets(), include_secrets=True).record(record) == record
