"""One reader of our format, one way to find specs/: static checks over the source tree.

Everything a responder tool reads from a bundle goes through agent/bundle/reader.py (bounded, strict
about names); a module with its own tar loop or its own member-name pattern would escape those bounds.
"""

from __future__ import annotations

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
