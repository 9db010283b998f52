"""One reader of our format, one way to find specs/: static checks over the source tree.

Everything a responder tool reads from a bundle goes through agent/bundle/reader.py (bounded, strict
about names); a module with its own tar loop or its own member-name pattern would escape those bounds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import specs

REPO = Path(__file__).resolve().parent.parent


def test_push_finds_its_documents_through_specs_path() -> None:
    # the path computed from __file__ pointed at agent/specs/push once push.py moved to agent/responder/
    from agent.responder import push

    assert push.SPECS_PUSH == specs.path("push")
    for name in ("aws-ssm-triagent.json", "azure-run-command.sh", "gcp-ssh.sh"):
        assert (push.SPECS_PUSH / name).is_file(), name


def test_stream_members_in_part_order_and_stream_rows_over_a_tar(tmp_path) -> None:
    import io
    import tarfile

    from agent.bundle.reader import stream_members, stream_of, stream_rows

    names = ["triagent/artifacts/p.part1000.jsonl", "triagent/artifacts/p.part999.jsonl",
             "triagent/artifacts/p.jsonl", "triagent/artifacts/a.jsonl", "triagent/custody.json", "fs/$rootfs$/x"]
    assert stream_members(names) == [("triagent/artifacts/a.jsonl", "a"), ("triagent/artifacts/p.jsonl", "p"),
                                      ("triagent/artifacts/p.part999.jsonl", "p"),
                                      ("triagent/artifacts/p.part1000.jsonl", "p")]
    assert stream_of("triagent/artifacts/dissect.linux.log.auth.part002.jsonl") == "dissect.linux.log.auth"
    assert stream_of("triagent/custody.json") is None
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in (("triagent/artifacts/p.jsonl", b'{"n": 1}\n[1]\nnot json\n' + b"[" * 100_000 + b"\n"),
                           ("triagent/artifacts/p.part001.jsonl", b'{"n": 2}\n')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with tarfile.open(path) as tar:
        assert list(stream_rows(tar, "p")) == [("triagent/artifacts/p.jsonl", 1, {"n": 1}),
                                               ("triagent/artifacts/p.part001.jsonl", 1, {"n": 2})]


# --- the static check -------------------------------------------------------------------------------------

# The modules that parse our format themselves, and why that is legitimate:
FORMAT_MODULES = {
    "agent/bundle/tarformat.py": "the tar header coding itself, shared by the writer and the reader",
    "agent/bundle/writer.py": "writes the format: it defines the member names (MANIFEST_NAME...) and the layout",
    "agent/bundle/reader.py": "the one reader: bounded, strict about names; every responder tool goes through it",
    "agent/bundle/verify.py": "checks the bytes as the writer wrote them (canonical headers, seal), through "
                              "BundleReader(strict=True) and tarformat's header type",
}
NAMES_MANIFEST = {"agent/bundle/writer.py"}  # the one place "triagent/manifest.json" is spelled


def _strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string constant that is not a docstring (f-strings' literal parts included)."""
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def _violations() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted([*(REPO / "agent").rglob("*.py"), *(REPO / "collectors").rglob("*.py")]):
        rel = str(path.relative_to(REPO))
        tree = ast.parse(path.read_text(), rel)
        said = found.setdefault(rel, [])
        if rel not in FORMAT_MODULES:
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
                         if isinstance(node, ast.ImportFrom) else [])
                for name in names:
                    if name == "tarfile" or name.startswith("tarfile.") or name == "agent.bundle.tarformat":
                        said.append(f"line {node.lineno}: imports {name} (open bundles through agent.bundle.reader)")
                    if name in ("agent.bundle.reader.STREAM_MEMBER",):
                        said.append(f"line {node.lineno}: matches member names with STREAM_MEMBER "
                                    "(use reader.stream_rows / stream_members / stream_of)")
            for line, text in _strings(tree):
                if "triagent/artifacts/" in text:
                    said.append(f"line {line}: spells {text!r} (a stream's members: reader.stream_members, "
                                "stream_member, Member.stream)")
        if rel not in NAMES_MANIFEST:
            for line, text in _strings(tree):
                if "triagent/manifest.json" in text:
                    said.append(f"line {line}: spells {text!r} (agent.bundle.writer.MANIFEST_NAME)")
    return {k: sorted(v, key=lambda p: int(p.split(":")[0].split()[1])) for k, v in found.items() if v}


def test_one_reader_of_our_format():
    """No module but the format's own (FORMAT_MODULES) opens tar members or matches triagent/artifacts/
    member names, and only the writer spells triagent/manifest.json."""
    found = _violations()
    mine = {"agent/responder/timeline.py", "agent/responder/report.py", "agent/responder/rank.py",
            "agent/responder/push.py"}
    assert not {k: v for k, v in found.items() if k in mine}, found
    listed = "\n".join(f"  {module}: " + "; ".join(problems) for module, problems in sorted(found.items()))
    assert not found, ("modules reading our format outside agent/bundle/reader.py (to do by their owners: the "
                       f"analysis engineer's findings.py, rules.py, yara.py; signing.py: MANIFEST_NAME):\n{listed}")


def test_the_static_check_sees_what_it_forbids(tmp_path):
    bad = ast.parse('import tarfile\nx = f"triagent/artifacts/{s}.jsonl"\ny = "triagent/manifest.json"\n')
    assert sorted(t for _, t in _strings(bad) if "triagent/" in t) == ["triagent/artifacts/", "triagent/manifest.json"]
    doc = ast.parse('"""triagent/artifacts/<stream>.jsonl: a docstring may say so."""\n')
    assert _strings(doc) == []
