#!/usr/bin/env bash
# Prove that a commit builds bit for bit: clone it twice into two fresh folders (different paths, different
# path lengths), build each with build/build.sh in its own fresh build venv (TRIAGENT_BUILD_VENV) and its own
# PyInstaller cache, and compare every file of the two dist/ folders (the binaries, their SBOMs,
# NAME.sha256, NAME.cdx.json.sha256, NAME.sources) by SHA-256.
#
#   bash build/reproduce.sh [COMMIT]        (default HEAD: the commit, not the working tree's edits)
#   bash build/reproduce.sh --compare DIST_A DIST_B   (only the comparison of two dist/ folders)
#
# Exit 0 when every file is identical; 1 when one differs, after naming what differs inside it: for a
# PyInstaller onefile the bootloader part and each archive member (every module of the PYZ too, and every
# member of a zip such as base_library.zip), for the staticx portable form its launcher and each tar member
# of its .staticx.archive section (mode, owner, mtime, content; the onefile inside compared as above), for a
# JSON file (the SBOMs) the first differing keys; and diffoscope's report beside it when Debian's diffoscope
# (or diffoscope-minimal) is installed. 2 when a build fails.
# The work folder (TRIAGENT_REPRO_DIR, default a new /tmp/triagent-repro.XXXXXX) is removed on success and
# kept on a difference or a failure (the logs, the two dist/ folders); TRIAGENT_REPRO_KEEP=1 always keeps it.
# Other variables pass through to build.sh (TRIAGENT_BUILD_ARCH, TRIAGENT_BUILD_PORTABLE, ...); build.sh
# takes SOURCE_DATE_EPOCH from the commit unless it is set.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"

log() { printf '[reproduce] %s\n' "$*" >&2; }
die() { printf '[reproduce] ERROR: %s\n' "$*" >&2; exit 2; }

# compare PYTHON DIST_A DIST_B: the comparison itself (PYTHON needs PyInstaller and pyelftools: a build venv)
compare() {
    "$1" - "$2" "$3" <<'EOF'
import hashlib, io, json, os, sys, tarfile, tempfile, zipfile

a_dir, b_dir = sys.argv[1], sys.argv[2]
out = []


def say(depth, text):
    out.append("  " * depth + text)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def first_diff(a, b):
    n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"{len(a)} vs {len(b)} bytes, first difference at offset {n}"


def carchive(path):
    from PyInstaller.archive.readers import CArchiveReader
    try:
        return CArchiveReader(path)
    except Exception:
        return None


def compare_zip(a, b, depth):
    za, zb = zipfile.ZipFile(io.BytesIO(a)), zipfile.ZipFile(io.BytesIO(b))
    ia, ib = {i.filename: i for i in za.infolist()}, {i.filename: i for i in zb.infolist()}
    if list(ia) != list(ib):
        say(depth, f"member order or names differ: only in A {sorted(set(ia) - set(ib))[:10]}, "
                   f"only in B {sorted(set(ib) - set(ia))[:10]}")
    for name in sorted(set(ia) & set(ib)):
        x, y = ia[name], ib[name]
        if x.date_time != y.date_time:
            say(depth, f"{name}: timestamp {x.date_time} vs {y.date_time}")
        if za.read(name) != zb.read(name):
            say(depth, f"{name}: content differs ({first_diff(za.read(name), zb.read(name))})")


def compare_onefile(pa, pb, depth):
    """Two PyInstaller onefile executables: the bootloader part, then member by member."""
    ra, rb = carchive(pa), carchive(pb)
    if ra is None or rb is None:
        return False
    with open(pa, "rb") as f:
        boot_a = f.read(ra._start_offset)
    with open(pb, "rb") as f:
        boot_b = f.read(rb._start_offset)
    if boot_a != boot_b:
        say(depth, f"the bootloader (bytes before the archive) differs: {first_diff(boot_a, boot_b)}")
    if ra.options != rb.options:
        say(depth, f"run-time options differ: {ra.options} vs {rb.options}")
    names_a, names_b = list(ra.toc), list(rb.toc)
    if names_a != names_b:
        say(depth, f"archive members differ in names or order: only in A {sorted(set(names_a) - set(names_b))[:10]}, "
                   f"only in B {sorted(set(names_b) - set(names_a))[:10]}")
    for name in [n for n in names_a if n in rb.toc]:
        ea, eb = ra.toc[name], rb.toc[name]
        if ea[4] == "z":  # the PYZ: module by module
            za, zb = ra.open_embedded_archive(name), rb.open_embedded_archive(name)
            if list(za.toc) != list(zb.toc):
                say(depth, f"{name}: module lists differ: only in A {sorted(set(za.toc) - set(zb.toc))[:10]}, "
                           f"only in B {sorted(set(zb.toc) - set(za.toc))[:10]}")
            for mod in [m for m in za.toc if m in zb.toc]:
                ma, mb = za.extract(mod, raw=True), zb.extract(mod, raw=True)
                if ma != mb:
                    say(depth, f"{name}: module {mod} differs ({first_diff(ma or b'', mb or b'')})")
            continue
        da, db = ra.extract(name), rb.extract(name)
        if da == db:
            if ea[1:] != eb[1:]:
                say(depth, f"{name}: same content, stored differently (length/compression {ea[1:]} vs {eb[1:]})")
            continue
        say(depth, f"{name} ({ea[4]}): content differs ({first_diff(da, db)})")
        if name.endswith(".zip") or da[:4] == b"PK\x03\x04":
            compare_zip(da, db, depth + 1)
    if ra.raw_pkg_data()[-64:] != rb.raw_pkg_data()[-64:]:
        say(depth, "the archive's cookie (its end) differs")
    return True


def staticx_section(path):
    from elftools.elf.elffile import ELFFile
    with open(path, "rb") as f:
        try:
            elf = ELFFile(f)
        except Exception:
            return None
        sec = elf.get_section_by_name(".staticx.archive")
        if sec is None:
            return None
        start, data = sec["sh_offset"], sec.data()
        f.seek(0)
        whole = f.read()
    return whole[:start] + whole[start + len(data):], data


def compare_portable(pa, pb, depth):
    """Two staticx executables: the launcher (the ELF around the archive section), then the tar members."""
    sa, sb = staticx_section(pa), staticx_section(pb)
    if sa is None or sb is None:
        return False
    if sa[0] != sb[0]:
        say(depth, f"the staticx launcher (the ELF outside .staticx.archive) differs: {first_diff(sa[0], sb[0])}")
    ta, tb = (tarfile.open(fileobj=io.BytesIO(s[1])) for s in (sa, sb))
    ma, mb = ta.getmembers(), tb.getmembers()
    if [m.name for m in ma] != [m.name for m in mb]:
        say(depth, f".staticx.archive: member names or order differ: {[m.name for m in ma]} vs {[m.name for m in mb]}")
    bmap = {m.name: m for m in mb}
    for x in ma:
        y = bmap.get(x.name)
        if y is None:
            continue
        for field in ("mode", "uid", "gid", "uname", "gname", "mtime", "type", "linkname"):
            if getattr(x, field) != getattr(y, field):
                say(depth, f".staticx.archive {x.name}: {field} {getattr(x, field)!r} vs {getattr(y, field)!r}")
        if x.isfile():
            da, db = ta.extractfile(x).read(), tb.extractfile(y).read()
            if da != db:
                say(depth, f".staticx.archive {x.name}: content differs ({first_diff(da, db)})")
                with tempfile.TemporaryDirectory() as tmp:
                    fa, fb = os.path.join(tmp, "a"), os.path.join(tmp, "b")
                    open(fa, "wb").write(da)
                    open(fb, "wb").write(db)
                    compare_onefile(fa, fb, depth + 1)
    return True


def compare_json(a, b, depth, where="$"):
    if len(out) > 400:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                say(depth, f"{where}.{k}: only in {'A' if k in a else 'B'}")
            elif a[k] != b[k]:
                compare_json(a[k], b[k], depth, f"{where}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                compare_json(x, y, depth, f"{where}[{i}]")
    else:
        say(depth, f"{where}: {json.dumps(a)[:200]} vs {json.dumps(b)[:200]}")


names = sorted(set(os.listdir(a_dir)) | set(os.listdir(b_dir)))
same = 0
for name in names:
    pa, pb = os.path.join(a_dir, name), os.path.join(b_dir, name)
    if not (os.path.isfile(pa) and os.path.isfile(pb)):
        say(0, f"DIFFERS  {name}: only in {'A' if os.path.isfile(pa) else 'B'}")
        continue
    da, db = open(pa, "rb").read(), open(pb, "rb").read()
    if da == db:
        same += 1
        print(f"same     {sha(da)}  {name}")
        continue
    say(0, f"DIFFERS  {name}: A {sha(da)}, B {sha(db)} ({first_diff(da, db)})")
    if name.endswith(".json"):
        compare_json(json.loads(da), json.loads(db), 1)
    elif not compare_portable(pa, pb, 1) and not compare_onefile(pa, pb, 1):
        say(1, "(neither a PyInstaller onefile nor a staticx executable nor JSON: compared as bytes only)")
print("\n".join(out[:600]))
if len(out) > 600:
    print(f"... and {len(out) - 600} more lines")
print(f"{same} of {len(names)} files identical")
sys.exit(0 if same == len(names) else 1)
EOF
}

if [ "${1:-}" = "--compare" ]; then
    [ $# -eq 3 ] || die "usage: $0 --compare DIST_A DIST_B"
    venv="${TRIAGENT_BUILD_VENV:-$HERE/.venv}"
    [ -x "$venv/bin/python" ] || die "$venv/bin/python is missing (a build venv: bash build/build.sh makes it)"
    compare "$venv/bin/python" "$2" "$3"
    exit
fi

command -v git >/dev/null || die "git is needed (apt-get install git)"
commit="$(git -C "$ROOT" rev-parse --verify "${1:-HEAD}^{commit}")" || die "${1:-HEAD} is not a commit of $ROOT"
if [ -z "${1:-}" ] && [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
    log "note: $ROOT has uncommitted changes; they are not built (the commit $commit is)"
fi
WORKDIR="${TRIAGENT_REPRO_DIR:-$(mktemp -d /tmp/triagent-repro.XXXXXX)}"
mkdir -p "$WORKDIR"
log "commit $commit ($(git -C "$ROOT" log -1 --format=%cI "$commit")), work folder $WORKDIR"

t_all=$SECONDS
# Two names of different lengths: a build path that leaks into the output shows up as a difference, whether
# it is stored as text or only shifts offsets.
sides=(a second-clone)
for side in "${sides[@]}"; do
    src="$WORKDIR/$side/triagent"
    rm -rf "${WORKDIR:?}/$side"
    mkdir -p "$WORKDIR/$side"
    git clone -q --no-hardlinks --no-checkout "$ROOT" "$src"
    git -C "$src" -c advice.detachedHead=false checkout -q "$commit"
    log "building $side in $src (log: $WORKDIR/$side/build.log)"
    t0=$SECONDS
    if ! (cd "$src" && TRIAGENT_BUILD_VENV="$WORKDIR/$side/venv" PYINSTALLER_CONFIG_DIR="$WORKDIR/$side/pyinstaller" \
            bash build/build.sh) >"$WORKDIR/$side/build.log" 2>&1; then
        tail -n 30 "$WORKDIR/$side/build.log" >&2
        die "the build in $src failed (work folder kept: $WORKDIR)"
    fi
    log "$side built in $((SECONDS - t0)) s"
done

dist_a="$WORKDIR/${sides[0]}/triagent/dist"
dist_b="$WORKDIR/${sides[1]}/triagent/dist"
status=0
compare "$WORKDIR/${sides[0]}/venv/bin/python" "$dist_a" "$dist_b" | tee "$WORKDIR/compare.txt" || status=1
if [ "$status" -ne 0 ] && command -v diffoscope >/dev/null; then
    for f in "$dist_a"/*; do
        g="$dist_b/$(basename "$f")"
        [ -f "$g" ] && ! cmp -s "$f" "$g" || continue
        log "diffoscope $(basename "$f") -> $WORKDIR/diffoscope-$(basename "$f").txt"
        timeout 1200 diffoscope --text "$WORKDIR/diffoscope-$(basename "$f").txt" "$f" "$g" >/dev/null 2>&1 || true
    done
fi
log "two builds and the comparison took $((SECONDS - t_all)) s"
if [ "$status" -eq 0 ]; then
    log "reproducible: every file of dist/ is identical in both builds of $commit"
    [ "${TRIAGENT_REPRO_KEEP:-0}" = 1 ] || rm -rf "$WORKDIR"
else
    log "NOT reproducible: see above and $WORKDIR/compare.txt (work folder kept: $WORKDIR)"
fi
exit "$status"
