"""An OpenSSL configuration that loads a shared object of the host's choosing (tests of the hostile host)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from conftest import need


def evil_openssl_conf(folder: Path) -> tuple[Path, Path]:
    """An OpenSSL configuration that loads a provider module of the host's choosing, and the file that module's
    constructor writes when anything dlopen()s it: (openssl.cnf, marker). Built with the real compiler and loaded,
    if it is, by the real libcrypto."""
    need(shutil.which("gcc") is not None, "gcc builds the provider module (apt-get install gcc)")
    marker = folder / "provider-ran"
    source = folder / "evil.c"
    source.write_text('#include <stdio.h>\n__attribute__((constructor)) static void ran(void) {\n'
                      f'    FILE *f = fopen("{marker}", "w"); if (f) fclose(f);\n}}\n')
    module = folder / "evil.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(module), str(source)], check=True, timeout=120)
    conf = folder / "openssl.cnf"
    conf.write_text("openssl_conf = init\n[init]\nproviders = provider_sect\n[provider_sect]\nevil = evil_sect\n"
                    f"[evil_sect]\nmodule = {module}\nactivate = 1\n")
    return conf, marker

