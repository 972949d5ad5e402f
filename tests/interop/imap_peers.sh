#!/usr/bin/env bash
# The daemon's IMAP server against real clients, side by side with Dovecot 2.3 as the
# reference: the same client runs against both and their answers are compared.
#
#   tests/interop/imap_peers.sh
#
# 1. tests/interop/imap_client.py (Python's imaplib) replays Thunderbird's first sync as
#    alice on each server (APPEND of fixtures/mime/*.eml first, then CAPABILITY, ID, LIST,
#    SELECT, the header fetch, bodies in 64 KiB chunks, BODYSTRUCTURE, ENVELOPE, STATUS,
#    STORE, COPY, MOVE, EXPUNGE, IDLE with a second connection APPENDing); each run has
#    its own checks, and the two canonical transcripts are diffed: every difference
#    must be on the allow-list tests/interop/imap_allowed_diffs.txt. Then LOGIN over
#    STARTTLS and over implicit TLS (lnmp-bridge only: this Dovecot has no TLS).
# 2. tests/interop/mbsync_sync.py: as bob on each server, 1,000 generated messages
#    pushed with mbsync, pulled into a second Maildir, compared, then flags and
#    deletions made on both sides and synced back.
#
# Needs dovecot-imapd (dovecot, run as root: its mail processes use the system user
# vmail, created when missing), isync (mbsync) and python3 (stdlib only). Binary:
# LNMP_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/lnmp-bridge (cargo build
# --locked --bin lnmp-bridge). Both servers listen on free loopback ports and keep
# everything in a temporary folder, removed on exit (kept when KEEP_WORK=1); both are
# stopped on exit. Each check prints "ok - ..." or "not ok - ..."; the last line
# counts them, and the exit status is 1 if any failed. Takes about a minute.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
. "$root/tests/interop/peers_lib.sh"

target="${CARGO_TARGET_DIR:-target}"
lnmp_bin=$(abs "${LNMP_BIN:-$target/debug/lnmp-bridge}")

[ -x "$lnmp_bin" ] || { echo "missing $lnmp_bin: cargo build --locked --bin lnmp-bridge" >&2; exit 1; }
for tool in dovecot mbsync python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: dovecot-imapd isync python3)" >&2; exit 1; }
done

# Only what this script sets reaches the daemon: its own config file, no overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

work=$(mktemp -d)
# shellcheck source=tests/interop/imap_servers.sh
. "$root/tests/interop/imap_servers.sh"
cleanup() {
  servers_stop
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# counted NAME COMMAND...: runs a Python part, shows its output, and adds its
# "ok - " / "not ok - " lines to the counts; a part that dies without saying why
# counts as one failure.
counted() {
  local name=$1 log="$work/$1.log" rc=0 p f
  shift
  timeout 600 "$@" >"$log" 2>&1 || rc=$?
  cat "$log"
  p=$(grep -c '^ok - ' "$log" || true)
  f=$(grep -c '^not ok - ' "$log" || true)
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" != 0 ] && [ "$f" = 0 ]; then
    not_ok "$name exited with status $rc" "$log"
  fi
}

# --- servers ------------------------------------------------------------------------

dovecot_start
echo "# Dovecot $(dovecot --version | cut -d' ' -f1) on 127.0.0.1:$dovecot_port"

alice_pw=alice-password-1
bob_pw=bob-password-22
daemon_config
ours=1
if daemon_user_add "$lnmp_bin" alice "$alice_pw" >"$work/daemon/user-add.log" 2>&1 &&
  daemon_user_add "$lnmp_bin" bob "$bob_pw" >>"$work/daemon/user-add.log" 2>&1 &&
  daemon_start "$lnmp_bin" 2>/dev/null; then
  ok "lnmp-bridge serves IMAP on 127.0.0.1:$imap_port"
else
  not_ok "lnmp-bridge serves IMAP on 127.0.0.1:$imap_port ([imap] listen in its config)" \
    "$work/daemon/user-add.log" "$work/daemon/daemon.out" "$work/daemon/daemon.err"
  ours=0
fi

# The capabilities lnmp-bridge promises after login (Dovecot is not held to them).
promised="IMAP4rev1 SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS MOVE UNSELECT LITERAL+ UTF8=ACCEPT SPECIAL-USE CHILDREN CONDSTORE"
client=(python3 "$root/tests/interop/imap_client.py")

# --- 1. Thunderbird's first sync, transcripts compared ---------------------------------

counted client-dovecot "${client[@]}" run --port "$dovecot_port" --user alice --password pw \
  --fixtures "$root/fixtures/mime" --out "$work/dovecot.json" --label dovecot
if [ "$ours" = 1 ]; then
  counted client-ours "${client[@]}" run --port "$imap_port" --user alice --password "$alice_pw" \
    --login-user alice@bridge.test --fixtures "$root/fixtures/mime" --out "$work/ours.json" \
    --label lnmp-bridge --require-caps "$promised"
  if [ -s "$work/dovecot.json" ] && [ -s "$work/ours.json" ]; then
    counted compare "${client[@]}" compare "$work/dovecot.json" "$work/ours.json" \
      --allow "$root/tests/interop/imap_allowed_diffs.txt"
  else
    not_ok "transcripts to compare (one run wrote none)"
  fi
fi

if [ "$ours" = 1 ]; then
  counted tls-ours "${client[@]}" tls --port "$imap_port" --tls-port "$imaps_port" --user bob \
    --password "$bob_pw" --label lnmp-bridge
fi

# --- 2. mbsync: 1,000 messages both ways ----------------------------------------------

counted mbsync-dovecot python3 "$root/tests/interop/mbsync_sync.py" run --port "$dovecot_port" \
  --user bob --password pw --work "$work/mbsync-dovecot" --label dovecot
if [ "$ours" = 1 ]; then
  counted mbsync-ours python3 "$root/tests/interop/mbsync_sync.py" run --port "$imap_port" \
    --user bob --password "$bob_pw" --work "$work/mbsync-ours" --label lnmp-bridge
  if kill -0 "$daemon_pid" 2>/dev/null; then
    ok "lnmp-bridge is still running after the suite"
  else
    not_ok "lnmp-bridge is still running after the suite" "$work/daemon/daemon.err"
  fi
  # Errors the daemon logged during the suite (shown, not counted: some are expected).
  if grep -Eq ' (ERROR|WARN) ' "$work/daemon/daemon.err" 2>/dev/null; then
    echo "# the daemon logged warnings or errors:"
    grep -E ' (ERROR|WARN) ' "$work/daemon/daemon.err" | head -20 | sed 's/^/#   /'
  fi
fi

echo "imap_peers: $passed passed, $failed failed"
[ "$failed" = 0 ]
