#!/usr/bin/env bash
# The whole test suite on a fresh Debian machine, as root (CI runs exactly this through .ci/run):
# installs what the tests need, builds the single binary once, then ruff and pytest.
# Components a user's machine may lack are skipped with a reason locally and required when CI=true.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in strace:strace ssh-keygen:openssh-client setpriv:util-linux tar:tar gzip:gzip mkfs.ext4:e2fsprogs \
        debugfs:e2fsprogs fls:sleuthkit qemu-system-x86_64:qemu-system-x86 busybox:busybox-static age:age \
        npm:npm node:nodejs musl-gcc:musl-tools scons:scons readelf:binutils chromium:chromium \
        zsh:zsh fish:fish mksh:mksh ksh93:ksh93u+m utmpdump:util-linux pdftotext:poppler-utils gcc:gcc \
        mkfs.xfs:xfsprogs at:at nft:nftables iptables-legacy:iptables setcap:libcap2-bin chattr:e2fsprogs \
        podman:podman kubectl:kubernetes-client containerd:containerd ctr:containerd nginx:nginx-light; do
    # shells and utmpdump write the files parsers read; pdftotext reads the printed report; gcc builds the
    # scenario corpus's payloads; XFS: the statx bodyfile fallback; at writes the jobs the persistence reader
    # parses; nft/iptables set real rules in a test's own network namespace; setcap/chattr plant capabilities
    # and immutable flags; podman, containerd and kubectl write the container runtimes' own files; nginx and
    # php-fpm (run on loopback by the tests) write the web error logs the web_errors reader parses
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
/usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
command -v rpmbuild >/dev/null && command -v db5.3_load >/dev/null && command -v git >/dev/null || need+=(rpm db5.3-util git)  # real RPM databases (SQLite, Berkeley DB) the package readers are tested on; a git clone's hooks in /tmp
ldconfig -p | grep -q 'libsnappy\.so\.1' || need+=(libsnappy1v5)  # volatility3 reads AVML images with it
[ -x /lib/systemd/systemd-journal-remote ] || need+=(systemd-journal-remote)  # writes the journal files tests plant
command -v dockerd >/dev/null || need+=(docker.io)  # a real dockerd writes the container files tests read
ldconfig -p | grep -q 'libfuse\.so\.2' || need+=(libfuse2)  # fusepy's FUSE server whose reads never answer
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)  # the report's browser test
# the real cloud-init and waagent write the files the cloud-agents reader is tested on: their Python
# dependencies are installed, the packages themselves only unpacked (installed, cloud-init would run at boot)
for mod in jinja2 configobj jsonpatch jsonschema requests netifaces serial; do
    /usr/bin/python3 -c "import $mod" 2>/dev/null || need+=("python3-$mod")
done
ls /usr/sbin/php-fpm* >/dev/null 2>&1 || need+=(php-fpm)
# arptables/ebtables (legacy) write the rules and files the in-process firewall readers are compared with; tc
# attaches the eBPF classifier the tc reader must find; apache2 + mod_php and tomcat10 (with a JRE), run on
# loopback by the tests, write the access and error logs the web readers parse
for pair in arptables-legacy:arptables ebtables-legacy:ebtables tc:iproute2 apache2:apache2; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
ls /usr/lib/apache2/modules/libphp*.so >/dev/null 2>&1 || need+=(libapache2-mod-php)
[ -e /usr/share/tomcat10/bin/bootstrap.jar ] || need+=(tomcat10)
if [ "${#need[@]}" -gt 0 ]; then
    echo "[tests] apt-get install ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # the packages' own services (nginx on :80, php-fpm, containerd) are not started by the install:
    # tests run the programs themselves, on loopback or in namespaces they make
    nostart=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; nostart=1; }
    apt-get install -y -q --no-install-recommends "${need[@]}"
    [ -z "$nostart" ] || rm -f /usr/sbin/policy-rc.d
fi
for pkg in cloud-init waagent; do
    [ -d "/opt/triagent-test-deps/$pkg/usr" ] && continue
    dl=$(mktemp -d) && (cd "$dl" && apt-get download -q "$pkg" >/dev/null) \
        && mkdir -p "/opt/triagent-test-deps/$pkg" && dpkg-deb -x "$dl"/"$pkg"_*.deb "/opt/triagent-test-deps/$pkg"
    rm -rf "$dl"
done

# Debian's own interpreter: the same one the single binary is built from.
[ -x .venv/bin/python ] || /usr/bin/python3 -m venv .venv
# Exactly the hash-pinned lock (build/lock.sh writes it from setup.cfg: every extra but `build`), then the
# project itself without dependencies: nothing unpinned reaches the venv the tests run in.
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r build/requirements-dev.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
if ! .venv/bin/python -m pip check --disable-pip-version-check >&2; then
    [ "${CI:-}" = "true" ] && { echo "[tests] pip check failed on .venv (from build/requirements-dev.lock)" >&2; exit 1; }
    echo "[tests] pip check: .venv holds packages the lock does not (an older venv?); rm -rf .venv to start clean" >&2
fi
# Storage servers that check signatures, on loopback only (tests/support/upload_servers.py starts them).
[ -x tests/.npm/node_modules/.bin/s3rver ] && [ -x tests/.npm/node_modules/.bin/azurite-blob ] ||
    npm install --prefix tests/.npm --no-audit --no-fund s3rver@3.7.1 azurite@3.35.0

# The binaries, from one PyInstaller run: dist/triagent (tests run the main collect with it), its staticx
# wrapping dist/triagent-portable, and dist/triagent-responder (analyze with Sigma, YARA-X and the cloud
# ranges; tests/e2e/test_responder_binary.py). A failed build fails the run in CI.
if ! bash build/build.sh; then
    [ "${CI:-}" = "true" ] && { echo "[tests] build/build.sh failed" >&2; exit 1; }
    echo "[tests] build/build.sh failed: binary tests will be skipped" >&2
fi

# Not in the default run (each would add 20 minutes or more; see README): TRIAGENT_AARCH64=1 builds the aarch64
# binaries (build/aarch64.sh: an arm64 Debian root under qemu-user-static) and boots them in an arm64 QEMU guest
# (its kernel and busybox come from apt's arm64 lists); TRIAGENT_REPRO=1 runs build/reproduce.sh (two clean
# builds of HEAD must be byte-identical) from tests/build/test_reproducible.py.
if [ "${TRIAGENT_AARCH64:-}" = 1 ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || { dpkg --add-architecture arm64; apt-get update -q; }
    command -v qemu-system-aarch64 >/dev/null ||
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-system-arm
    bash build/aarch64.sh
fi

.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
