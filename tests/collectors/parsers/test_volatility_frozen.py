"""volatility3 inside the single binary (issue 15, item 4): its automagics and layers are found by walking
their package folders for *.py files (volatility3.framework.import_files), and in a PyInstaller onefile
those folders hold no source (the modules live in the PYZ archive). Simulated here in a fresh interpreter
by making that walk find nothing for those packages, exactly what it finds in dist/triagent: the Linux
automagics (stacker, symbol finder, kernel module) and the LiME layer must still be there once a Session
is set up, or every kernel plugin fails with "symbols missing" whatever table is offered.
(tests/e2e/test_findings_qemu.py runs the real binary over a real guest's bundle.)"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

PROBE = r"""
import json, sys
import volatility3.framework as framework

walked = {"volatility3.framework.automagic", "volatility3.framework.layers"}
real = framework.import_files

def frozen_walk(base_module, ignore_errors=False):
    # the binary's folders for these packages contain no *.py: the walk imports nothing
    return [] if base_module.__name__ in walked else real(base_module, ignore_errors)

framework.import_files = frozen_walk
from collectors.parsers.volatility import Session
from volatility3.framework import automagic, contexts, interfaces

image = sys.argv[1]
Session(image, [], sys.argv[2])
magic = sorted(type(a).__name__ for a in automagic.available(contexts.Context()))
stackers = sorted(c.__name__ for c in framework.class_subclasses(interfaces.automagic.StackerLayerInterface))
layers = sorted(c.__name__ for c in framework.class_subclasses(interfaces.layers.DataLayerInterface))
print(json.dumps({"automagic": magic, "stackers": stackers, "layers": layers}))
"""


def test_session_has_the_linux_automagics_and_layers_when_the_folders_hold_no_source(tmp_path):
    image = tmp_path / "empty.lime"
    image.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-c", PROBE, str(image), str(tmp_path / "cache")], cwd=REPO,
                          capture_output=True, timeout=300, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    found = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert {"LinuxSymbolFinder", "KernelModule", "ConstructionMagic", "LayerStacker"} <= set(found["automagic"]), found
    assert "LinuxIntelStacker" in found["stackers"] and "LimeStacker" in found["stackers"], found
    assert {"LimeLayer", "Elf64Layer", "AVMLLayer", "LinuxIntel32e"} <= set(found["layers"]), found
