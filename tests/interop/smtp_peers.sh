#!/usr/bin/env bash
# The daemon's SMTP server against real peers: swaks for the protocol checks, Postfix's
# smtp-source for a short burst, and a few raw-socket probes (python3) where swaks
# cannot say what is needed (AUTH that was not advertised, bare LF inside a command).
#
#   tests/interop/smtp_peers.sh
#
# Needs swaks (with libnet-ssleay-perl for TLS), smtp-source (Debian's postfix package),
# python3, and sqlite3 for the outbound-queue check (skipped with a note when missing).
# Binaries: LNMP_BIN and DNS_STUB_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/
# lnmp-bridge and .../examples/dns_stub (cargo build --locked --bin lnmp-bridge
# --example dns_stub). Everything runs on loopback in a temporary folder, removed on
# exit (kept when KEEP_WORK=1). Each check prints "ok - ..." or "not ok - ..." with the
# peer's transcript; the last line counts them, and the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_binaries lnmp-bridge dns_stub
zone="$root/fixtures/dns/test.zone"

need_tools "Debian: swaks postfix python3" swaks smtp-source python3
perl -MNet::SSLeay -e1 2>/dev/null || { echo "swaks needs Net::SSLeay for TLS (Debian: libnet-ssleay-perl)" >&2; exit 1; }
have_sqlite=1
command -v sqlite3 >/dev/null || have_sqlite=0

# Only what this script sets reaches the daemon: no config file, no inherited overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

work=$(mktemp -d)
dns_pid=""
daemon_pid=""
cleanup() {
  stop "$daemon_pid"
  stop "$dns_pid"
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"


# --- DNS stub and daemon -------------------------------------------------------------

timeout 1800 "$dns_stub_bin" --listen 127.0.0.1:0 --zone "$zone" >dns.out 2>dns.err &
dns_pid=$!
wait_for dns.out '^dns stub listening on ' "$dns_pid"
dns_addr=$(sed -n 's/^dns stub listening on //p' dns.out)

export LNMP__SERVER__DATA_DIR="$work/data"
export LNMP__SERVER__DOMAIN=bridge.test
export LNMP__SERVER__HOSTNAME=mx.bridge.test
export LNMP__HTTP__LISTEN=127.0.0.1:0
# The relay advertises the port it was given, so it gets a real one; the SMTP listeners
# take any free port and are read back from the banner.
export LNMP__RELAY__LISTEN="127.0.0.1:$(free_port)"
export LNMP__SMTP__MX_LISTEN=127.0.0.1:0
# Strangers' mail passes free here: the paywall has its own checks (payments_peers.sh).
export LNMP__PRICING__STRANGER=0
export LNMP__SMTP__SUBMISSION_LISTEN=127.0.0.1:0
export LNMP__SMTP__SUBMISSIONS_LISTEN=127.0.0.1:0
export LNMP__IMAP__LISTEN=
export LNMP__IMAP__TLS_LISTEN=
export LNMP__DNS__NAMESERVERS="[\"$dns_addr\"]"
export LNMP__LIMITS__SHUTDOWN_GRACE_SECONDS=5
db="$work/data/lnmp-bridge.db"

alice_pw=alice-password-1
bob_pw=bob-password-22
printf '%s\n' "$alice_pw" | timeout 60 "$lnmp_bin" user add alice --password-stdin >/dev/null
printf '%s\n' "$bob_pw" | timeout 60 "$lnmp_bin" user add bob --password-stdin >/dev/null

timeout 1800 "$lnmp_bin" serve >daemon.out 2>daemon.err &
daemon_pid=$!
wait_for daemon.out '^Mail clients:' "$daemon_pid"
port_of() { sed -n "s/^  $1 on 127\.0\.0\.1:\([0-9]*\)\$/\1/p" daemon.out; }
mx=$(port_of 'SMTP MX (STARTTLS)')
sub=$(port_of 'SMTP submission (STARTTLS, AUTH)')
subs=$(port_of 'SMTP submission (implicit TLS, AUTH)')
for p in "$mx" "$sub" "$subs"; do
  [ -n "$p" ] && accepts "$p" || { echo "an SMTP listener is missing or closed:" >&2; cat daemon.out daemon.err >&2; exit 1; }
done
echo "# daemon: MX $mx, submission $sub, submissions $subs; DNS stub $dns_addr"

# --- helpers ---------------------------------------------------------------------------


# next_reply_after PATTERN: the server reply that follows the one matching PATTERN.
next_reply_after() {
  awk -v p="^<[-~*]+ +$1" 'found && /^<[-~*]+ / { print; exit } $0 ~ p { found = 1 }' "$log"
}

# inbox USER: the user's LNMP inbox, opened with their key (also kept in a file).
inbox() {
  timeout 120 "$lnmp_bin" user inbox "$1" >"$work/inbox-$1.txt" 2>&1 || {
    echo "user inbox $1 failed:" >&2
    cat "$work/inbox-$1.txt" >&2
    return 1
  }
  cat "$work/inbox-$1.txt"
}
# message USER SUBJECT: the lines of the message with that subject (nothing if none).
# (Bodies of bridged mail keep the email's CRLF line ends: compared without the CR.)
message() {
  local text
  text=$(inbox "$1" | tr -d '\r') || return 1
  awk -v s="subject: $2" '
    done { next }
    $0 == "---" { if (hit) { printf "%s", buf; done = 1 } buf = ""; next }
    { buf = buf $0 "\n"; if ($0 == s) hit = 1 }' <<<"$text"
}
has_message() { [ -n "$(message "$1" "$2")" ]; }
lacks_message() { local m; m=$(message "$1" "$2") && [ -z "$m" ]; }
message_has() { # user subject exact-line
  local m
  m=$(message "$1" "$2") && grep -Fxq -- "$3" <<<"$m"
}
message_has_prefix() { # user subject line-prefix
  local m
  m=$(message "$1" "$2") && grep -Fq -- "$3" <<<"$m"
}
inbox_lacks() { # user text: no line of the inbox contains text
  local text
  text=$(inbox "$1") && ! grep -Fq -- "$2" <<<"$text"
}
count_ids() { local text; text=$(inbox "$1") && grep -c '^id:' <<<"$text" || true; }
sql() { sqlite3 -cmd '.timeout 10000' "$db" "$1"; }
queued_for() { [ "$(sql "select count(*) from outbound_recipients where recipient = '$1'")" -ge 1 ]; }

# raw PORT STEP...: a plain-TCP SMTP client that sends bytes exactly as given.
# Each STEP is N:PAYLOAD; PAYLOAD takes Python escapes (\r, \n); after sending it the
# client reads N replies (10 s each at most), then whatever else arrives within 0.5 s,
# so a server that answers more (or fewer) than N times shows it. Transcript in $log.
cat >"$work/raw_smtp.py" <<'PY'
import socket, sys

port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port), timeout=10)
buf = b""
closed = False

def reply(timeout):
    global buf, closed
    s.settimeout(timeout)
    lines = []
    while True:
        while b"\n" not in buf:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                if lines:
                    print("<- (partial reply)", lines)
                return None
            if not chunk:
                closed = True
                print("<- (connection closed)")
                return None
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        print("<-", text)
        lines.append(text)
        if text[3:4] != "-":
            return lines

def read(n):
    for _ in range(n):
        if reply(10) is None:
            return
    while not closed and reply(0.5) is not None:
        pass

read(1)
for step in sys.argv[2:]:
    if closed:
        break
    count, payload = step.split(":", 1)
    data = payload.encode("utf-8").decode("unicode_escape").encode("latin-1")
    print("->", repr(data)[2:-1])
    try:
        s.sendall(data)
    except OSError as e:
        print("-> (send failed: %s)" % e)
        break
    read(int(count))
PY
raw() {
  n=$((n + 1))
  log="$work/raw-$n.log"
  printf '$ raw_smtp %s\n' "$*" >"$log"
  rc=0
  timeout 120 python3 "$work/raw_smtp.py" "$@" >>"$log" 2>&1 || rc=$?
  echo "# exit status $rc" >>"$log"
}
# raw_reply_to PAYLOAD-PREFIX: the replies printed after the step whose bytes start so
# (up to the next step), one per line.
raw_replies_after() {
  awk -v p="-> $1" 'index($0, p) == 1 { on = 1; next } on && /^-> / { exit } on && /^<- / { print substr($0, 4) }' "$log"
}

# --- MX ----------------------------------------------------------------------------------

swaks_run --port "$mx" --from bob@example.test --to alice@bridge.test \
  --header "Subject: mx plain" --body "plain body"
check "MX: plain delivery from bob@example.test lands in alice's inbox, marked as bridged email" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 0 && replied "250 2\.0\.0" && has_message alice "mx plain" &&
        message_has alice "mx plain" "via:     email from bob@example.test" &&
        message_has alice "mx plain" "plain body"'

swaks_run --port "$mx" --tls --from bob@example.test --to alice@bridge.test --header "Subject: mx starttls"
check "MX: STARTTLS delivery" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 0 && grep -q "^=== TLS started" "$log" && replied "250 2\.0\.0" &&
        message_has alice "mx starttls" "via:     email from bob@example.test"'

# 3000 bytes of text; swaks sends it base64-encoded, the inbox shows the decoded size.
# (--attach-name: this swaks would otherwise name the part "@file", with the @.)
head -c 2250 /dev/urandom | base64 -w 75 | head -c 3000 >report.txt
att_size=$(wc -c <report.txt)
swaks_run --port "$mx" --from bob@example.test --to alice@bridge.test --header "Subject: mx attachment" \
  --body "see attached" --attach-type text/plain --attach-name report.txt --attach @report.txt
check "MX: attachment (report.txt, $att_size bytes) shows in the inbox with its name, type and size" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 0 && message_has_prefix alice "mx attachment" "attach:  report.txt (text/plain, $att_size bytes, "'

swaks_run --port "$mx" --from bob@example.test --to nobody@bridge.test
check "MX: unknown local user refused at RCPT with 550 5.1.1" "$log" -- \
  eval 'status_is 24 && replied "550 5\.1\.1"'

swaks_run --port "$mx" --from bob@example.test --to carol@elsewhere.example
check "MX: relaying to another domain refused at RCPT with 554 5.7.1" "$log" -- \
  eval 'status_is 24 && replied "554 5\.7\.1"'

swaks_run --port "$mx" --pipeline --from bob@example.test --to alice@bridge.test --header "Subject: mx pipelined"
check "MX: PIPELINING (swaks --pipeline) delivers" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 0 && grep -q "PIPELINING" "$log" && has_message alice "mx pipelined"'

# --- submission ---------------------------------------------------------------------

auth_alice=(--auth-user alice --auth-password "$alice_pw")

swaks_run --port "$sub" --tls --auth PLAIN "${auth_alice[@]}" --from alice@bridge.test \
  --to bob@bridge.test,carol@elsewhere.example --header "Subject: submission plain"
check "submission: STARTTLS + AUTH PLAIN as alice to bob@bridge.test and carol@elsewhere.example accepted" "$log" -- \
  eval 'status_is 0 && replied "235 " && replied "250 2\.0\.0"'
check "submission: bob's inbox has alice's message" "$work/inbox-bob.txt" -- \
  has_message bob "submission plain"
if [ "$have_sqlite" = 1 ]; then
  check "submission: carol@elsewhere.example is in the outbound queue" "$db" -- \
    queued_for carol@elsewhere.example
else
  echo "# skipped: outbound-queue check for carol (sqlite3 is not installed)"
fi

swaks_run --port "$sub" --tls --auth LOGIN "${auth_alice[@]}" --from alice@bridge.test \
  --to bob@bridge.test --header "Subject: submission login"
check "submission: STARTTLS + AUTH LOGIN delivers to bob" "$log" "$work/inbox-bob.txt" -- \
  eval 'status_is 0 && replied "235 " && has_message bob "submission login"'

swaks_run --port "$subs" --tlsc --auth PLAIN "${auth_alice[@]}" --from alice@bridge.test \
  --to bob@bridge.test --header "Subject: submissions implicit tls"
check "submissions: implicit TLS + AUTH PLAIN delivers to bob" "$log" "$work/inbox-bob.txt" -- \
  eval 'status_is 0 && grep -q "^=== TLS started" "$log" && has_message bob "submissions implicit tls"'

swaks_run --port "$sub" --auth PLAIN "${auth_alice[@]}" --from alice@bridge.test --to bob@bridge.test
check "submission: AUTH is not advertised before STARTTLS" "$log" -- \
  eval 'status_is 28 && grep -q "did not advertise authentication" "$log"'

# swaks never sends an AUTH that was not advertised, so this one is a raw client.
plain=$(printf '\0alice\0%s' "$alice_pw" | base64 -w0)
raw "$sub" '1:EHLO client.example\r\n' "1:AUTH PLAIN $plain\r\n" '1:MAIL FROM:<alice@bridge.test>\r\n' '1:QUIT\r\n'
check "submission: AUTH before STARTTLS refused with 538, and MAIL then needs AUTH (530)" "$log" -- \
  eval '[ "$(raw_replies_after "AUTH PLAIN" | cut -c1-3)" = 538 ] &&
        [ "$(raw_replies_after "MAIL FROM" | cut -c1-3)" = 530 ]'

swaks_run --port "$sub" --tls --from alice@bridge.test --to bob@bridge.test
check "submission: MAIL without AUTH refused with 530" "$log" -- \
  eval 'status_is 23 && replied "530 "'

swaks_run --port "$sub" --tls --auth PLAIN --auth-user alice --auth-password not-her-password \
  --from alice@bridge.test --to bob@bridge.test
check "submission: wrong password refused with 535" "$log" -- \
  eval 'status_is 28 && replied "535 "'

swaks_run --port "$sub" --tls --auth PLAIN "${auth_alice[@]}" --from bob@bridge.test \
  --to bob@bridge.test --header "Subject: submission spoof"
check "submission: alice sending as bob@bridge.test refused with 550 at MAIL" "$log" "$work/inbox-bob.txt" -- \
  eval 'status_is 23 && replied "550 " && lacks_message bob "submission spoof"'

# --- SMTP smuggling ------------------------------------------------------------------
# Each payload has a fake end of data after the outer message, then a whole second
# transaction (MAIL/RCPT/DATA) to bob. Only CRLF.CRLF ends a message: the server must
# read everything up to the real end, refuse the message for its bare CR/LF (550
# 5.6.11), answer nothing else (the next reply is QUIT's 221), and deliver neither part.
# swaks sends these bytes as they are with --no-data-fixup (it adds only the final CRLF).
for variant in 'LF.LF:\n.\n' 'CR.CR:\r.\r' 'LF.CRLF:\n.\r\n' 'CRLF.CR:\r\n.\r'; do
  name=${variant%%:*}
  marker=${variant#*:}
  printf 'From: bob@example.test\r\nTo: alice@bridge.test\r\nSubject: outer %s\r\n\r\nouter body%b' "$name" "$marker" >"smuggle-$name.eml"
  printf 'MAIL FROM:<alice@bridge.test>\r\nRCPT TO:<bob@bridge.test>\r\nDATA\r\n' >>"smuggle-$name.eml"
  printf 'From: alice@bridge.test\r\nTo: bob@bridge.test\r\nSubject: smuggled %s\r\n\r\nsmuggled body\r\n.' "$name" >>"smuggle-$name.eml"
  swaks_run --port "$mx" --from bob@example.test --to alice@bridge.test --no-data-fixup --data "@smuggle-$name.eml"
  check "smuggling: $name payload refused with 550 5.6.11, no smuggled commands run, nothing delivered" "$log" "$work/inbox-bob.txt" -- \
    eval 'status_is 26 && replied "550 5\.6\.11" && next_reply_after "550 5[.]6[.]11" | grep -Eq " 221 " &&
          lacks_message bob "smuggled $name" && lacks_message alice "outer $name"'
done

raw "$mx" '1:EHLO client.example\r\n' '1:MAIL FROM:<bob@example.test>\r\n' '1:RCPT TO:<alice@bridge.test>\r\n' '1:DATA\r\n' \
  '1:Subject: bare lf\r\nFrom: bob@example.test\r\n\r\nbare\nline\r\n.\r\n' \
  '1:MAIL FROM:<bob@example.test>\r\n' '1:RCPT TO:<alice@bridge.test>\r\n' '1:DATA\r\n' \
  '1:Subject: after bare lf\r\nFrom: bob@example.test\r\n\r\nclean\r\n.\r\n' '1:QUIT\r\n'
check "smuggling: after a 550 5.6.11 the session goes on and its next (clean) message is delivered" "$log" "$work/inbox-alice.txt" -- \
  eval 'raw_replies_after "Subject: bare lf" | grep -q "^550 5\.6\.11" &&
        [ "$(raw_replies_after "Subject: after bare lf" | cut -c1-3)" = 250 ] &&
        lacks_message alice "bare lf" && has_message alice "after bare lf"'

# --- command and header injection -----------------------------------------------------
# A command line ends at CRLF only: a bare LF or CR inside one is not a second command.

raw "$mx" '1:EHLO client.example\r\n' '1:MAIL FROM:<bob@example.test>\nRCPT TO:<bob@bridge.test>\r\n' \
  '1:DATA\r\n' '1:Subject: injected lf\r\n\r\ninjected\r\n.\r\n' '1:QUIT\r\n'
# The line is refused with a 5xx and nothing in it is accepted (a server may also hang
# up after refusing it; then DATA is never sent); DATA then finds no transaction.
check "injection: MAIL FROM:<...>\\nRCPT TO:<bob> on one line gets a syntax error (5xx), opens no transaction, delivers nothing" "$log" "$work/inbox-bob.txt" -- \
  eval 'raw_replies_after "MAIL FROM" | head -1 | grep -q "^5" && ! raw_replies_after "MAIL FROM" | grep -q "^2" &&
        { ! grep -q "^-> DATA" "$log" || raw_replies_after "DATA" | grep -q "^503"; } &&
        lacks_message bob "injected lf"'

swaks_run --port "$mx" --from $'bob@example.test>\rRCPT TO:<bob@bridge.test' --to alice@bridge.test \
  --header "Subject: injected cr"
check "injection: MAIL FROM:<...>\\rRCPT TO:<bob> on one line refused with a 5xx syntax error, nothing delivered" "$log" "$work/inbox-bob.txt" -- \
  eval 'status_is 23 && replied "5[05][0-9] " && lacks_message bob "injected cr" && lacks_message alice "injected cr"'

swaks_run --port "$mx" --from bob@example.test --to alice@bridge.test \
  --header $'Subject: injected header\rBcc: carol@elsewhere.example'
check "injection: a bare CR inside a header value (swaks --header) refused with 550 5.6.11, not delivered" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 26 && replied "550 5\.6\.11" && inbox_lacks alice "injected header"'

# --- smtp-source burst ---------------------------------------------------------------

before=$(count_ids alice)
n=$((n + 1))
log="$work/smtp-source-$n.log"
rc=0
timeout 300 smtp-source -s 2 -m 20 -l 2048 -f sender@example.test -t alice@bridge.test "127.0.0.1:$mx" >"$log" 2>&1 || rc=$?
echo "# exit status $rc" >>"$log"
after=$before
for _ in $(seq 1 50); do
  after=$(count_ids alice)
  [ $((after - before)) -ge 20 ] && break
  sleep 0.2
done
echo "# alice's inbox: $before before, $after after" >>"$log"
check "smtp-source: 2 sessions x 20 messages of 2 KiB all land in alice's inbox" "$log" -- \
  eval 'status_is 0 && [ $((after - before)) = 20 ]'

echo "smtp_peers: $passed passed, $failed failed"
[ "$failed" = 0 ]
