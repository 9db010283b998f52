#!/bin/sh
# triagent push over `gcloud compute ssh` (OS Login with roles/compute.osAdminLogin for sudo; add
# --tunnel-through-iap for VMs without a public address). GCP has no run-command API: the script goes
# through ssh's stdin, the parameters as positional arguments. Paste as is:
#   gcloud compute ssh VM --zone ZONE --tunnel-through-iap --command \
#     "sudo -n sh -s -- URL HEX b64:$(base64 -w0 ticket.json) CASE-1 triage false - 1800 3600" \
#     < gcp-ssh.sh
# (a whole fleet: the same line in a loop or with xargs -P). Positions: 1 binaryUrl 2 binarySha256
# 3 uploadTicket (JSON, b64:JSON, fetch+URL of a ticket, or a presigned URL) 4 caseId 5 profile
# 6 memory (true|false) 7 encryptTo 8 maxDuration 9 timeLimit (seconds; ssh has no timeout of its own);
# "-" means empty. TRIAGENT_* environment variables work too (sudo -n env TRIAGENT_TMP=... sh -s --).
# Prints one JSON line; exit 0 complete, 1 partial, 2 usage, 3 fatal/refused (never 194/168/169).
TRIAGENT_BINARY_URL=${1:-${TRIAGENT_BINARY_URL:-}}
TRIAGENT_BINARY_SHA256=${2:-${TRIAGENT_BINARY_SHA256:-}}
TRIAGENT_UPLOAD_TICKET=${3:-${TRIAGENT_UPLOAD_TICKET:-}}
TRIAGENT_CASE_ID=${4:-${TRIAGENT_CASE_ID:-}}
TRIAGENT_PROFILE=${5:-${TRIAGENT_PROFILE:-}}
TRIAGENT_MEMORY=${6:-${TRIAGENT_MEMORY:-}}
TRIAGENT_ENCRYPT_TO=${7:-${TRIAGENT_ENCRYPT_TO:-}}
TRIAGENT_MAX_DURATION=${8:-${TRIAGENT_MAX_DURATION:-}}
TRIAGENT_TIME_LIMIT=${9:-${TRIAGENT_TIME_LIMIT:-3600}}
[ "$TRIAGENT_CASE_ID" = - ] && TRIAGENT_CASE_ID=''
[ "$TRIAGENT_PROFILE" = - ] && TRIAGENT_PROFILE=''
[ "$TRIAGENT_ENCRYPT_TO" = - ] && TRIAGENT_ENCRYPT_TO=''
[ "$TRIAGENT_MEMORY" = - ] && TRIAGENT_MEMORY=''
[ "$TRIAGENT_MAX_DURATION" = - ] && TRIAGENT_MAX_DURATION=''

# --- BEGIN triagent push body ---
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH LC_ALL=C
umask 077
t0=$(date +%s)
work=''
cleanup() { if [ -n "$work" ]; then cd / && rm -rf "$work"; fi; }
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
trap 'exit 129' HUP
js() { printf '%s' "$1" | tr -d '"\\\000-\037' | cut -c1-200; }
push() {
  printf '{"fetched_to":"%s","fs":"%s","fetcher":"%s","elapsed_s":%s%s}' "$(js "$work")" "$(js "${fs:-}")" \
    "${fetcher:-}" "$(($(date +%s) - t0))" "${1:-}"
}
fail() {
  printf '{"status":"%s","error":"%s","push":%s}\n' "$2" "$(js "$3")" "$(push)"
  exit "$1"
}
TRIAGENT_PROFILE=${TRIAGENT_PROFILE:-triage}
TRIAGENT_MEMORY=${TRIAGENT_MEMORY:-false}
TRIAGENT_MAX_DURATION=${TRIAGENT_MAX_DURATION:-1800}
TRIAGENT_TIME_LIMIT=${TRIAGENT_TIME_LIMIT:-3600}
want=$(printf '%s' "${TRIAGENT_BINARY_SHA256:-}" | tr 'A-F' 'a-f' | tr -d ' \r\n')
case $want in *[!0-9a-f]*|'') want=bad ;; esac
[ ${#want} -eq 64 ] || fail 2 usage "binarySha256 must be 64 hex digits"
[ -n "${TRIAGENT_BINARY_URL:-}" ] || fail 2 usage "binaryUrl is empty"
[ -n "${TRIAGENT_UPLOAD_TICKET:-}" ] || fail 2 usage "uploadTicket is empty"
for n in "$TRIAGENT_MAX_DURATION" "$TRIAGENT_TIME_LIMIT"; do
  case $n in *[!0-9]*|'') fail 2 usage "maxDuration and the time limit are whole seconds" ;; esac
done

# Memory-backed and exec-able first; a directory that refuses exec is no use for the binary.
for d in /dev/shm ${TRIAGENT_TMP:-} /run /tmp /var/tmp; do
  [ -d "$d" ] && [ -w "$d" ] || continue
  work=$(mktemp -d "$d/triagent-push.XXXXXX" 2>/dev/null) || { work=''; continue; }
  printf '#!/bin/sh\nexit 0\n' >"$work/x" && chmod 700 "$work/x" && "$work/x" 2>/dev/null && break
  rm -rf "$work"
  work=''
done
[ -n "$work" ] || fail 3 fatal "no writable exec-able directory (/dev/shm, TRIAGENT_TMP, /run, /tmp, /var/tmp)"
rm -f "$work/x"
fs=$(stat -f -c %T "$work" 2>/dev/null || echo unknown)
HOME=$work
TMPDIR=$work
export HOME TMPDIR
cd "$work" || fail 3 fatal "cannot enter the work directory"

fetch() {
  if command -v curl >/dev/null 2>&1; then
    fetcher=curl
    # the URL goes through stdin, not argv: a presigned URL is a credential visible in ps
    printf 'url = "%s"\noutput = "%s"\n' "$1" "$2" | curl -fsS --retry 3 --connect-timeout 20 -K - 2>>err
  elif command -v wget >/dev/null 2>&1; then
    fetcher=wget
    wget -q -O "$2" "$1" 2>>err
  elif command -v python3 >/dev/null 2>&1; then
    fetcher=python3
    printf '%s' "$1" | python3 -c 'import shutil,sys,urllib.request as u
shutil.copyfileobj(u.urlopen(sys.stdin.read(), timeout=60), open(sys.argv[1], "wb"))' "$2" 2>>err
  else
    fetcher=none
    return 127
  fi
}
sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  elif command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 "$1" | sed 's/.*= *//'
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest())' "$1"
  fi
}

fetch "$TRIAGENT_BINARY_URL" "$work/triagent" || fail 3 fatal "cannot fetch the binary with ${fetcher}"
got=$(sha256 "$work/triagent" 2>/dev/null)
if [ "$got" != "$want" ]; then
  rm -f "$work/triagent"
  printf 'triagent-push: REFUSED: SHA-256 of the fetched binary is %s, expected %s\n' "${got:-unknown}" "$want" >&2
  fail 3 refused "binary SHA-256 mismatch: got ${got:-none (no sha256sum, openssl or python3)}, expected $want"
fi
chmod 700 "$work/triagent"

ticket=$TRIAGENT_UPLOAD_TICKET
case $(printf '%s' "$ticket" | tr -d ' \t\r\n' | cut -c1-6) in
  '{'*) printf '%s\n' "$ticket" >"$work/ticket.json" && ticket=$work/ticket.json ;;
  b64:*) printf '%s' "${ticket#b64:}" | base64 -d >"$work/ticket.json" 2>>err && ticket=$work/ticket.json ||
           fail 2 usage "uploadTicket b64: is not base64" ;;
  fetch+) fetch "${ticket#fetch+}" "$work/ticket.json" && ticket=$work/ticket.json ||
            fail 3 fatal "cannot fetch the upload ticket" ;;
  http:/*|https:) ;;
  *) [ -r "$ticket" ] || fail 2 usage "uploadTicket is not JSON, b64:, fetch+URL, a URL or a readable file" ;;
esac

# Our deadline ends before the channel's (whose SIGKILL would leave the work directory behind):
# 30 s kept for cleanup and the summary, the binary gets SIGTERM (it seals a partial bundle) then
# SIGKILL 10 s later; --max-duration leaves a quarter of the rest for sealing and the upload's tail.
left=$((TRIAGENT_TIME_LIMIT - ($(date +%s) - t0) - 30))
[ "$left" -ge 40 ] || fail 3 fatal "time limit too short: ${left}s left after the fetch"
term=$((left - 10))
md=$TRIAGENT_MAX_DURATION
[ "$md" -le $((term * 3 / 4)) ] || md=$((term * 3 / 4))
if timeout -k 1 5 true 2>/dev/null; then deadline="timeout -k 10 $term"
elif timeout 5 true 2>/dev/null; then deadline="timeout $term"
else deadline=''
fi
set -- collect --upload "$ticket" --profile "$TRIAGENT_PROFILE" --max-duration "$md"
[ -n "${TRIAGENT_CASE_ID:-}" ] && set -- "$@" --case-id "$TRIAGENT_CASE_ID"
[ "$TRIAGENT_MEMORY" = true ] && set -- "$@" --memory
[ -n "${TRIAGENT_ENCRYPT_TO:-}" ] && set -- "$@" --encrypt-to "$TRIAGENT_ENCRYPT_TO"
$deadline "$work/triagent" "$@" </dev/null >out 2>>err
rc=$?
timed_out=false
case $rc in
  0|1|2|3) ;;
  124) rc=1; timed_out=true ;;
  *) rc=3 ;;
esac
line=$(grep '^{' out | tail -n 1)
extra=",\"sha256_ok\":true,\"exit\":$rc,\"timed_out\":$timed_out,\"max_duration\":$md"
case $fs in tmpfs|ramfs) ;; *) extra="$extra,\"on_disk\":true" ;; esac
if [ -z "$line" ]; then
  tail -c 300 err >&2
  fail 3 fatal "the collector printed no summary (exit $rc)"
fi
printf '{"push":%s,%s\n' "$(push "$extra")" "${line#?}"
# SSM keeps 2,500 characters of stdout and stderr together: stderr gets what the summary left.
if [ "$rc" -ne 0 ]; then
  room=$((2300 - ${#line}))
  [ "$room" -gt 0 ] && tail -c "$room" err | tr -d '\000' >&2
fi
exit "$rc"
# --- END triagent push body ---
