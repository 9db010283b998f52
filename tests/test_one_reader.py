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
