#!/usr/bin/env bash
# Build the aarch64 binaries on this x86_64 machine (root, Debian 12):
#
#   bash build/aarch64.sh
#
# makes dist/triagent-aarch64 and dist/triagent-aarch64-portable, each with its .sha256, its CycloneDX SBOM
# (.cdx.json) and the SBOM's .cdx.json.sha256, exactly as build/build.sh makes them for x86_64, because it IS
# build/build.sh: run unchanged inside an arm64 Debian 12 (bookworm) root, under qemu-user-static through
# binfmt_misc, with Debian's own arm64 python3, TRIAGENT_BUILD_ARCH=aarch64 (so it installs exactly
# build/requirements-aarch64.lock with --require-hashes), the patched PyInstaller bootloader compiled there
# and the patched staticx (its launcher built with arm64 musl-gcc).
#
# Steps: (1) host packages, only the missing ones (debootstrap, qemu-user-static, binfmt-support);
# (2) binfmt_misc mounted if it is not, qemu-aarch64 registered if it is not (with the F flag: the
# interpreter is opened once, at registration, so it works inside the chroot without a copy there);
# (3) the arm64 root, made once with `debootstrap --arch=arm64 --foreign` + its second stage under qemu,
# with build.sh's apt packages already in it, cached in build/work/aarch64/root (git-ignored) and
# remade only when the package list below changes; (4) the source: `git archive HEAD` (committed files
# only; TRIAGENT_AARCH64_SOURCE=worktree copies the working tree instead, without .git/.venv/dist/
# build/work), copied fresh into the root's /src/triagent at each run; the build venv lives outside the copy
# (/opt/triagent-build-venv in the root), so a second run reuses it, the patched PyInstaller and staticx,
# and only rebuilds; (5) build.sh in the root, in a private mount namespace (proc, a bind of /dev and a
# tmpfs on /dev/shm: unmounted by a trap on every exit, and gone with the namespace even on SIGKILL; the
# host's mount table never sees them); (6) the results copied out with the -aarch64 suffix (names inside
# the .sha256 files fixed).
#
# `bash build/aarch64.sh --with-binfmt CMD...` does steps 1-2 only, runs CMD (e.g. the portable binary: it
# re-executes itself, so it needs binfmt_misc even under qemu-aarch64-static) and undoes them.
#
# Environment: TRIAGENT_AARCH64_KEEP_BINFMT=1 leaves binfmt_misc mounted (by default a run unmounts it
# again if it mounted it: since Linux 6.7 that also drops every registration, the host is as it was);
# SOURCE_DATE_EPOCH (default: the commit's time); TRIAGENT_AARCH64_SOURCE=head|worktree (default head); TRIAGENT_BUILD_RESPONDER (default 0:
# the responder binary is not built for aarch64; 1 builds dist/triagent-responder-aarch64 too);
# TRIAGENT_DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
A64="$HERE/work/aarch64"          # git-ignored (/build/work/)
CHR="$A64/root"                   # the arm64 Debian root
DIST="$ROOT/dist"
SUITE=bookworm
MIRROR="${TRIAGENT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SOURCE="${TRIAGENT_AARCH64_SOURCE:-head}"
RESPONDER="${TRIAGENT_BUILD_RESPONDER:-0}"
# What build.sh's step 1 would apt-get install (python3-venv, libpython3.11, binutils, gcc, libc6-dev,
# zlib1g-dev, patch, musl-tools, scons), in the root from the start: build.sh then installs nothing.
# ca-certificates: pip fetches the lock's files from pypi.org. Changing this list remakes the root.
ROOT_PACKAGES=python3,python3-venv,libpython3.11,binutils,gcc,libc6-dev,zlib1g-dev,patch,musl-tools,scons,ca-certificates
VENV_IN=/opt/triagent-build-venv  # inside the root, outside the source copy: kept between runs
SRC_IN=/src/triagent

log() { printf '[aarch64] %s\n' "$*" >&2; }
die() { printf '[aarch64] ERROR: %s\n' "$*" >&2; exit 1; }
T_START=$SECONDS

# --- inner: runs in a private mount namespace (see the end of this file) -------------------------------
if [ "${1:-}" = --in-namespace ]; then
    # Nothing mounted here propagates to the host (unshare --propagation private); the trap still unmounts,
    # innermost first, so that a process left in the root cannot keep them busy.
    mounted=()
    # shellcheck disable=SC2317  # called by the trap
    cleanup() {
        local i
        for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
            umount "${mounted[i]}" 2>/dev/null || umount -l "${mounted[i]}" 2>/dev/null || true
        done
    }
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    mnt() {  # mnt TARGET MOUNT-ARGS...
        local target="$1"; shift
        mount "$@" "$target"
        mounted+=("$target")
    }
    mnt "$CHR/proc" -t proc proc
    mnt "$CHR/dev" --bind /dev
    mnt "$CHR/dev/shm" -t tmpfs -o mode=1777,size=2g tmpfs  # the bootloaders unpack into /dev/shm first
    shift
    # An empty environment but for what build.sh needs: nothing of the host's leaks into the build but its
    # way to the registry (proxy variables, and the CA bundle it trusts, copied in below).
    pass=()
    for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_DEFAULT_TIMEOUT SOURCE_DATE_EPOCH; do
        [ -z "${!v:-}" ] || pass+=("$v=${!v}")
    done
    ca=/etc/ssl/certs/triagent-host-ca.crt
    chroot "$CHR" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        PIP_CERT="$ca" SSL_CERT_FILE="$ca" REQUESTS_CA_BUNDLE="$ca" "${pass[@]}" \
        TRIAGENT_BUILD_ARCH=aarch64 TRIAGENT_BUILD_VENV="$VENV_IN" TRIAGENT_BUILD_RESPONDER="$RESPONDER" \
        "$@"
    exit $?
fi

# `bash build/aarch64.sh --with-binfmt CMD...` only sets binfmt_misc up (steps 1-2), runs CMD and undoes what it
# did: an aarch64 program that re-executes itself (PyInstaller's onefile, staticx's launcher) needs the kernel
# to run its arm64 child through qemu, which `qemu-aarch64-static PROGRAM` alone cannot do.
MODE=build
if [ "${1:-}" = --with-binfmt ]; then
    MODE=run
    shift
    [ "$#" -gt 0 ] || die "--with-binfmt needs a command"
fi
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, binfmt_misc, chroot)"
[ "$(uname -m)" = x86_64 ] || log "this host is $(uname -m), not x86_64: the root is still made for arm64"
[ -f "$HERE/requirements-aarch64.lock" ] || die "$HERE/requirements-aarch64.lock is missing (bash build/lock.sh)"

# One run at a time: runs share the root (and the binfmt_misc mount this one may make and undo).
mkdir -p "$A64"
exec 9>"$A64/.lock"
flock -w 7200 9 || die "another build/aarch64.sh holds $A64/.lock"

# --- 1. host packages, only those missing ----------------------------------------------------------------
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
[ -x /usr/bin/qemu-aarch64-static ] || need+=(qemu-user-static)
command -v update-binfmts >/dev/null || need+=(binfmt-support)
command -v unshare >/dev/null || need+=(util-linux)
[ "$SOURCE" != head ] || command -v git >/dev/null || need+=(git)
if [ "${#need[@]}" -gt 0 ]; then
    log "apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=600 "${need[@]}"
fi

# --- 2. binfmt_misc: mounted, qemu-aarch64 registered with F -------------------------------------------
BM=/proc/sys/fs/binfmt_misc
if [ ! -e "$BM/register" ]; then
    log "mounting binfmt_misc on $BM (unmounted again at exit: TRIAGENT_AARCH64_KEEP_BINFMT=1 keeps it)"
    mount -t binfmt_misc binfmt_misc "$BM" || die "cannot mount binfmt_misc (modprobe binfmt_misc?)"
    # The host is left as it was found. (Since Linux 6.7 the registrations live as long as the mount:
    # unmounting also drops the qemu-aarch64 entry made below; before 6.7 it stays registered.)
    if [ "${TRIAGENT_AARCH64_KEEP_BINFMT:-0}" != 1 ]; then
        trap 'umount "$BM" 2>/dev/null || umount -l "$BM" 2>/dev/null || true' EXIT
    fi
fi
# The entry qemu-user-static's package registers (through update-binfmts) when binfmt_misc is there at
# install time; after a reboot, or in a container, it may not be.
if ! grep -qx enabled "$BM/qemu-aarch64" 2>/dev/null; then
    if [ -e "$BM/qemu-aarch64" ]; then
        echo 1 > "$BM/qemu-aarch64"
    elif update-binfmts --enable qemu-aarch64 2>/dev/null && [ -e "$BM/qemu-aarch64" ]; then
        :
    else
        # The register line qemu's own scripts/qemu-binfmt-conf.sh writes for aarch64 (ELF64, LSB, e_machine
        # 183), F: the interpreter file is opened now, so the chroot needs no copy of it.
        log "registering qemu-aarch64 in $BM"
        printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
            > "$BM/register"
    fi
fi
grep -qx enabled "$BM/qemu-aarch64" || die "qemu-aarch64 is not enabled in $BM"
grep -q '^flags:.*F' "$BM/qemu-aarch64" \
    || die "qemu-aarch64 is registered without the F flag (the chroot cannot reach its interpreter): $(grep flags "$BM/qemu-aarch64")"

if [ "$MODE" = run ]; then
    "$@"
    exit $?
fi

# --- 3. the arm64 Debian 12 root, made once --------------------------------------------------------------
stamp="$CHR/.triagent-root"
want_stamp="$SUITE $MIRROR $ROOT_PACKAGES"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want_stamp" ]; then
    log "debootstrap --arch=arm64 $SUITE into $CHR (first stage, then the second under qemu)"
    t0=$SECONDS
    # A root left half-made (or with mounts from an older, killed run of a version without the namespace)
    # must not be deleted through a mount: refuse rather than rm -rf into /dev.
    ! grep -qF " $CHR/" /proc/self/mountinfo || die "something is mounted under $CHR; unmount it first"
    rm -rf "$CHR"
    mkdir -p "$CHR"
    debootstrap --arch=arm64 --foreign --variant=minbase --include="$ROOT_PACKAGES" "$SUITE" "$CHR" "$MIRROR"
    # (in a private mount namespace too: the second stage mounts proc and sys in the root)
    unshare --mount --propagation private -- chroot "$CHR" /debootstrap/debootstrap --second-stage
    # build.sh's smoke tests and pip run as root inside; apt inside never starts a service.
    printf '#!/bin/sh\nexit 101\n' > "$CHR/usr/sbin/policy-rc.d" && chmod 755 "$CHR/usr/sbin/policy-rc.d"
    chroot "$CHR" /usr/bin/python3 -c 'import platform, sys; assert platform.machine() == "aarch64", platform.machine(); assert sys.version_info[:2] == (3, 11)' \
        || die "the root's python3 is not Debian 12's aarch64 python3.11"
    echo "$want_stamp" > "$stamp"
    log "root made in $((SECONDS - t0)) s ($(du -sh "$CHR" | cut -f1))"
else
    log "reusing the arm64 root $CHR"
fi

# --- 4. a fresh copy of the source in the root -----------------------------------------------------------
log "source ($SOURCE) -> $CHR$SRC_IN"
rm -rf "$CHR$SRC_IN"
mkdir -p "$CHR$SRC_IN"
case "$SOURCE" in
    head)
        git -C "$ROOT" archive --format=tar HEAD | tar -C "$CHR$SRC_IN" -xf -
        rev="$(git -C "$ROOT" rev-parse HEAD)"
        ;;
    worktree)
        tar -C "$ROOT" --exclude=./.git --exclude=./.venv --exclude=./dist --exclude=./build/work \
            --exclude=./build/.venv --exclude=__pycache__ --exclude='*.egg-info' --exclude=./.pytest_cache \
            --exclude=./.ruff_cache -cf - . | tar -C "$CHR$SRC_IN" -xf -
        rev="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)+worktree"
        ;;
    *) die "TRIAGENT_AARCH64_SOURCE is head or worktree, not $SOURCE" ;;
esac
# build/symbols/linux/*.json* are git-ignored but go into the binary (the fleet's symbol tables): as build.sh
# on the host would take them, so does this copy.
if [ -d "$HERE/symbols" ]; then
    (cd "$HERE" && find symbols -type f -name '*.json*' -print0 | tar --null -T - -cf -) | tar -C "$CHR$SRC_IN/build" -xf -
fi
# The copy has no .git (and the root no git): build.sh takes the commit's time from SOURCE_DATE_EPOCH, the
# same as on the host for the same commit (a value set by the caller wins).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH="$(git -C "$ROOT" log -1 --format=%ct HEAD 2>/dev/null || true)"
fi
[ -z "$SOURCE_DATE_EPOCH" ] || export SOURCE_DATE_EPOCH
log "building commit $rev (SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-unset})"

# --- 5. build.sh inside the root, in a private mount namespace -------------------------------------------
# pip in the root reaches pypi.org as this host does: its resolver, and the CA bundle it trusts (a TLS-
# inspecting proxy's CA is in the host's bundle, not in the root's ca-certificates). The lock's hashes, not
# the transport, are what vouch for every file.
cp -L /etc/resolv.conf "$CHR/etc/resolv.conf"
cp -L "${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}" "$CHR/etc/ssl/certs/triagent-host-ca.crt"
t0=$SECONDS
unshare --mount --propagation private -- bash "$HERE/aarch64.sh" --in-namespace /bin/bash "$SRC_IN/build/build.sh" \
    || die "build/build.sh failed inside the arm64 root"
t_build=$((SECONDS - t0))
log "build.sh in the arm64 root took $t_build s"
# No mount of ours stays behind (the namespace is gone with the process).
! grep -qF " $CHR/" /proc/self/mountinfo || die "a mount under $CHR survived the build"

# --- 6. the results, renamed -aarch64 ----------------------------------------------------------------------
mkdir -p "$DIST"
out=()
names=(triagent triagent-portable)
[ "$RESPONDER" = 0 ] || names+=(triagent-responder)
for name in "${names[@]}"; do
    src="$CHR$SRC_IN/dist/$name"
    [ -x "$src" ] || die "$src was not produced"
    case "$name" in
        triagent) new=triagent-aarch64 ;;
        *) new="triagent-aarch64${name#triagent}" ;;
    esac
    [ "$name" != triagent-responder ] || new=triagent-responder-aarch64
    # Written beside, then renamed: a reader (the guest test) never sees half a binary.
    for ext in "" .cdx.json; do
        cp "$src$ext" "$DIST/.$new$ext.tmp"
        mv -f "$DIST/.$new$ext.tmp" "$DIST/$new$ext"
        # The .sha256 files name the file they hash: name the renamed one.
        sed -E "s/  $name$ext\$/  $new$ext/" "$src$ext.sha256" > "$DIST/.$new$ext.sha256.tmp"
        mv -f "$DIST/.$new$ext.sha256.tmp" "$DIST/$new$ext.sha256"
        (cd "$DIST" && sha256sum --quiet -c "$new$ext.sha256") || die "$DIST/$new$ext does not match its .sha256"
    done
    [ ! -f "$src.sources" ] || cp "$src.sources" "$DIST/$new.sources"
    chmod 755 "$DIST/$new"
    out+=("$DIST/$new")
done
for b in "${out[@]}"; do
    size="$(stat -c %s "$b")"
    printf '%s %s bytes (%s MiB) sha256 %s; SBOM sha256 %s\n' "$b" "$size" \
        "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" "$(cut -d' ' -f1 "$b.sha256")" \
        "$(cut -d' ' -f1 "$b.cdx.json.sha256")"
done
t0=$SECONDS
v="$(cd /usr/bin && env -i PATH=/usr/bin:/bin /usr/bin/qemu-aarch64-static "$DIST/triagent-aarch64-portable" --version 2>&1)" \
    || die "$DIST/triagent-aarch64-portable --version failed under qemu-aarch64-static: $v"
log "qemu-aarch64-static dist/triagent-aarch64-portable --version: $v ($((SECONDS - t0)) s)"
log "done in $((SECONDS - T_START)) s (build.sh in the root: $t_build s)"
