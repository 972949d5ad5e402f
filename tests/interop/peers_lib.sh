# Shared by the interop scripts that drive the daemon's binary against real peers
# (smtp_peers.sh, outbound_peers.sh, payments_peers.sh, nodes_peers.sh, acme_peers.sh,
# deploy_checks.sh, host_domain.sh): sourced after `cd` to the repository root, with
# `root` and `work` set by the caller. Defines the process and port helpers, the
# ok/not ok counting, swaks runs, and the binary and tool checks of their preambles.
# shellcheck shell=bash
# shellcheck disable=SC2154 # root and work come from the caller
# shellcheck disable=SC2034 # target, lnmp_bin, dns_stub_bin are for the caller

abs() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$root/$1" ;; esac; }

# stop PID: PID is a `timeout` wrapper, which passes TERM on to its child; after a
# bounded wait both get KILL.
stop() {
  local pid=$1 kids
  [ -n "$pid" ] || return 0
  kids=$(pgrep -P "$pid" || true)
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  # shellcheck disable=SC2086
  kill -9 "$pid" $kids 2>/dev/null || true
}

# wait_for FILE PATTERN PID: until a line of FILE matches, while PID lives (60 s at most).
wait_for() {
  for _ in $(seq 1 600); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  echo "gave up waiting for /$2/ in $1:" >&2
  cat "$1" "${1%.out}.err" >&2 2>/dev/null || true
  exit 1
}
# appears FILE PATTERN PID [SECONDS]: like wait_for (default 60 s), but returns 1 instead
# of ending the script.
appears() {
  for _ in $(seq 1 $((${4:-60} * 10))); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  grep -Eq "$2" "$1" 2>/dev/null
}
# lnmp_binaries lnmp-bridge [dns_stub]: sets target, lnmp_bin and, with dns_stub, dns_stub_bin
# (LNMP_BIN, DNS_STUB_BIN, by default under ${CARGO_TARGET_DIR:-target}/debug); ends the
# script if one is not built.
lnmp_binaries() {
  local build="cargo build --locked --bin lnmp-bridge" f
  target="${CARGO_TARGET_DIR:-target}"
  lnmp_bin=$(abs "${LNMP_BIN:-$target/debug/lnmp-bridge}")
  local bins=("$lnmp_bin")
  if [ "${2:-}" = dns_stub ]; then
    dns_stub_bin=$(abs "${DNS_STUB_BIN:-$target/debug/examples/dns_stub}")
    bins+=("$dns_stub_bin")
    build+=" --example dns_stub"
  fi
  for f in "${bins[@]}"; do
    [ -x "$f" ] || { echo "missing $f: $build" >&2; exit 1; }
  done
}
# need_tools HINT TOOL...: ends the script unless every TOOL is on PATH; HINT (may be
# empty) names the packages that bring them.
need_tools() {
  local hint=$1 tool
  shift
  for tool in "$@"; do
    command -v "$tool" >/dev/null || { echo "missing $tool${hint:+ ($hint)}" >&2; exit 1; }
  done
}
# loopback_listeners: the daemon's SMTP (MX, submission) and plain IMAP listeners on
# free loopback ports (read back from its banner), implicit-TLS submission and IMAP off,
# plaintext AUTH allowed on loopback, a 5 s shutdown grace.
loopback_listeners() {
  export LNMP__SMTP__MX_LISTEN=127.0.0.1:0
  export LNMP__SMTP__SUBMISSION_LISTEN=127.0.0.1:0
  export LNMP__SMTP__SUBMISSIONS_LISTEN=
  export LNMP__IMAP__LISTEN=127.0.0.1:0
  export LNMP__IMAP__TLS_LISTEN=
  export LNMP__IMAP__ALLOW_PLAINTEXT_AUTH_ON_LOOPBACK=true
  export LNMP__LIMITS__SHUTDOWN_GRACE_SECONDS=5
}
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
accepts() { # port: a TCP connect succeeds
  timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

passed=0
failed=0
ok() { printf 'ok - %s\n' "$1"; passed=$((passed + 1)); }
not_ok() { # what, then files to show (their last 80 lines)
  printf 'not ok - %s\n' "$1"
  shift
  local f
  for f in "$@"; do
    [ -e "$f" ] || continue
    printf '# --- %s\n' "$(basename "$f")"
    tail -n 80 "$f" | sed 's/^/#   /' || true
  done
  failed=$((failed + 1))
}
check() { # what, files to show on failure... -- command...
  local what=$1 files=()
  shift
  while [ "$1" != -- ]; do files+=("$1"); shift; done
  shift
  if "$@"; then ok "$what"; else not_ok "$what" "${files[@]}"; fi
}

n=0
# swaks ARGS...: runs swaks against loopback; transcript in $log, exit status in $rc.
swaks_run() {
  n=$((n + 1))
  log="$work/swaks-$n.log"
  { printf '$ swaks'; printf ' %q' "$@"; printf '\n'; } >"$log"
  rc=0
  timeout 60 swaks --server 127.0.0.1 --timeout 30 "$@" >>"$log" 2>&1 || rc=$?
  echo "# exit status $rc" >>"$log"
}
# replied CODE-PATTERN [LOG]: some server reply (swaks marks them <-, <~, <**, <~*) matches.
replied() { grep -Eq "^<[-~*]+ +$1" "${2:-$log}"; }
status_is() { [ "$rc" = "$1" ]; }
