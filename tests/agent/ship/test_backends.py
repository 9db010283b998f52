"""The backend registry: built from the classes in agent/ship/backends/, so that adding a service is adding
one file. Found here independently of the registry's own discovery (by reading the files), so a file whose
class the registry misses, or two classes claiming one kind, fail."""

from __future__ import annotations

import ast
import importlib
from collections import Counter
from pathlib import Path

import pytest

from agent.ship import backends, upload
from agent.ship.backends import KINDS, REGISTRY, Backend

FOLDER = Path(backends.__file__).parent


def declared_backends() -> list[tuple[str, str, str]]:
    """(module, class, kind) for every class in the folder's files that assigns a string to `kind`."""
    found = []
    for path in sorted(FOLDER.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not isinstance(node, ast.ClassDef):
                continue
            for stmt in node.body:
                targets = stmt.targets if isinstance(stmt, ast.Assign) else \
                    [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value is not None else []
                value = getattr(stmt, "value", None)
                if any(isinstance(t, ast.Name) and t.id == "kind" for t in targets) \
                        and isinstance(value, ast.Constant) and isinstance(value.value, str) and value.value:
                    found.append((f"{backends.__name__}.{path.stem}", node.name, value.value))
    return found


def test_the_registry_lists_exactly_the_backend_classes_of_the_folder():
    declared = declared_backends()
    assert declared, "no backend class found in agent/ship/backends/"
    classes = {getattr(importlib.import_module(module), name) for module, name, _ in declared}
    assert all(issubclass(cls, Backend) for cls in classes)
    assert set(REGISTRY.values()) == classes, "a backend class in agent/ship/backends/ is not registered"
    assert {kind: cls for kind, cls in REGISTRY.items()} == {cls.kind: cls for cls in classes}


def test_no_kind_is_declared_twice():
    twice = [kind for kind, n in Counter(kind for _, _, kind in declared_backends()).items() if n > 1]
    assert not twice, f"backend kinds declared by more than one class: {twice}"
    assert len(KINDS) == len(set(KINDS))


def test_kinds_are_the_registry_keys():
    assert KINDS == tuple(REGISTRY)
    assert upload.KINDS == KINDS
    assert set(KINDS) == {"s3-put", "s3-multipart", "azure-blob", "gcs-resumable", "https-put"}


def test_two_classes_of_one_kind_are_refused(tmp_path):
    """What the registry does with a duplicate: it refuses to build, naming both classes."""
    from agent.ship.backends import build_registry

    class One(Backend):
        kind = "dup-kind"

    class Two(Backend):
        kind = "dup-kind"

    with pytest.raises(TypeError, match="dup-kind.*One.*Two"):
        build_registry([One, Two])


def test_an_unknown_kind_is_a_ticket_error():
    with pytest.raises(upload.UploadError) as err:
        upload.open_upload({"format": upload.TICKET_FORMAT, "kind": "ftp-put", "url": "https://127.0.0.1:9/x"})
    assert err.value.kind == "ticket"


def test_part_plans_are_the_services_rules():
    """S3's single PUT holds the whole stream in one buffer as large as the ticket allows; a multipart ticket
    with parts under S3's 5 MiB minimum is refused before any connection (port 9: nothing listens)."""
    assert REGISTRY["s3-put"].part_plan({"max_bytes": 64 << 20}, 16 << 20, 2) == (64 << 20, 1)
    assert REGISTRY["s3-put"].part_plan({}, 16 << 20, 2) == (16 << 20, 1)
    assert REGISTRY["https-put"].part_plan({}, 16 << 20, 2) == (16 << 20, 2)
    ticket = {"format": upload.TICKET_FORMAT, "kind": "s3-multipart", "part_size": 1 << 20,
              "part_urls": ["https://127.0.0.1:9/p1"], "complete_url": "https://127.0.0.1:9/c"}
    with pytest.raises(upload.UploadError, match="below S3's 5 MiB minimum") as err:
        upload.open_upload(ticket)
    assert err.value.kind == "ticket"


def test_read_back_urls_by_kind():
    url = "https://127.0.0.1:9/c/blob?sv=1&sig=x"
    assert REGISTRY["s3-put"].read_url({"url": url}) == url
    assert REGISTRY["https-put"].read_url({"url": url}) == url
    assert REGISTRY["azure-blob"].read_url({"blob_url": url}) == url
    assert REGISTRY["azure-blob"].read_url({"container_url": "https://h/c?sig=x", "blob": "a b"}) == \
        "https://h/c/a%20b?sig=x"
    assert REGISTRY["azure-blob"].read_headers() == {"x-ms-version": upload.AZURE_VERSION}
    for kind in ("s3-multipart", "gcs-resumable"):
        assert REGISTRY[kind].read_url({"url": url}) is None
    with pytest.raises(upload.UploadError, match="no read URL"):
        upload.verify_remote({"kind": "gcs-resumable", "start_url": url})
