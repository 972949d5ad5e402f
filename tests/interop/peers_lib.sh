# Shared by the interop scripts that drive the daemon's binary against real peers
# (smtp_peers.sh, outbound_peers.sh): sourced after `cd` to the repository root, with
# `root` and `work` set by the caller. Defines the process and port helpers, the
# ok/not ok counting, and swaks runs.
# shellcheck shell=bash
# shellcheck disable=SC2154 # root and work come from the caller

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
