#!/usr/bin/env bash
# Mail leaving the daemon, against real peers: an aiosmtpd MTA as every remote domain's
# MX (tests/interop/outbound_sink.py, which records what it gets), a second one as an
# authenticated STARTTLS smarthost, swaks as the mail clients and remote senders, and
# dkimpy verifying the DKIM signatures against the keys quickstart made.
#
#   PYTHON=<venv>/bin/python tests/interop/outbound_peers.sh
#
# 1. Submission to carol@remote.test reaches the MX with both DKIM signatures (RSA and
#    Ed25519) verifying and DMARC-aligned, no Bcc field, dot lines intact.
# 2. Forwarding: mail for alice goes on to her forward address, rewritten to pass DMARC
#    as bridge.test, with a Reply-To that routes replies back.
# 3. A reply to that Reply-To from the forward address reaches the original sender as
#    from alice; the same from anyone else is refused. With forwarding off, nothing more
#    goes to the forward address.
# 4. A recipient the remote MX refuses (550 5.1.1): alice gets a DSN, the queue says failed.
# 5. Through a smarthost that is down: queued with the error, the daemon SIGKILLed and
#    restarted, the smarthost up, `queue flush`: each message arrives exactly once.
#
# Needs swaks (with libnet-ssleay-perl for TLS), openssl, and a Python (PYTHON, default
# python3) with tests/interop/requirements.txt installed (aiosmtpd, dkimpy, PyNaCl).
# Binaries: LNMP_BIN and DNS_STUB_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/
# lnmp-bridge and .../examples/dns_stub (cargo build --locked --bin lnmp-bridge
# --example dns_stub). Everything runs on loopback in a temporary folder, removed on
# exit (kept when KEEP_WORK=1); the DNS zone, with the DKIM keys of this run, is
# written there. Each check prints "ok - ..." or "not ok - ..." with what the peers
# said; the last line counts them, and the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_binaries lnmp-bridge dns_stub
py="${PYTHON:-python3}"
sink_py="$root/tests/interop/outbound_sink.py"

need_tools "Debian: swaks openssl python3" swaks openssl python3
perl -MNet::SSLeay -e1 2>/dev/null || { echo "swaks needs Net::SSLeay for TLS (Debian: libnet-ssleay-perl)" >&2; exit 1; }
"$py" -c 'import aiosmtpd, dkim, nacl' 2>/dev/null || {
  echo "$py lacks aiosmtpd, dkimpy or PyNaCl: set PYTHON to a Python with tests/interop/requirements.txt" >&2
  exit 1
}

# Only what this script sets reaches the daemon: no config file, no inherited overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

work=$(mktemp -d)
dns_pid=""
daemon_pid=""
mx_sink_pid=""
relay_sink_pid=""
cleanup() {
  stop "$daemon_pid"
  stop "$relay_sink_pid"
  stop "$mx_sink_pid"
  stop "$dns_pid"
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"



# --- the checker checks itself ---------------------------------------------------------
# The sink and its DKIM verification on a message signed here: a failure below is then
# the daemon's, not the checker's.

rc=0
timeout 300 "$py" "$sink_py" selftest >selftest.log 2>&1 || rc=$?
grep -E '^(not )?ok - ' selftest.log || true
passed=$((passed + $(grep -c '^ok - ' selftest.log || true)))
failed=$((failed + $(grep -c '^not ok - ' selftest.log || true)))
if [ "$rc" != 0 ] && ! grep -q '^not ok - ' selftest.log; then
  not_ok "outbound_sink.py selftest exited with status $rc" selftest.log
fi

# --- the remote MX: one sink for every remote domain -----------------------------------
# Local parts starting with "nobody" are refused at RCPT with 550 5.1.1.

timeout 1800 "$py" "$sink_py" serve --dir "$work/mx-sink" --reject-rcpt nobody >mx-sink.out 2>mx-sink.err &
mx_sink_pid=$!
wait_for mx-sink.out '^sink listening on ' "$mx_sink_pid"
mx_sink_port=$(sed -n 's/^sink listening on 127\.0\.0\.1://p' mx-sink.out)

# --- the domain: quickstart (config, master key, DKIM keys, alice) ---------------------

export LNMP__SERVER__DATA_DIR="$work/data"
export LNMP__SERVER__DOMAIN=bridge.test
export LNMP__SERVER__HOSTNAME=mx.bridge.test
export LNMP__HTTP__LISTEN=127.0.0.1:0
# The relay advertises the port it was given, so it gets a real one; the SMTP and IMAP
# listeners take any free port and are read back from the banner.
export LNMP__RELAY__LISTEN="127.0.0.1:$(free_port)"
loopback_listeners
# Strangers' mail passes free here: the paywall has its own checks (payments_peers.sh).
export LNMP__PRICING__STRANGER=0
# Every remote MX is the sink; the queue is looked at every second.
export LNMP__OUTBOUND__MX_PORT="$mx_sink_port"
export LNMP__OUTBOUND__POLL_SECONDS=1
export LNMP__OUTBOUND__TIMEOUT_SECONDS=15

# quickstart writes its config file into its own folder (not this one, so the daemon
# runs on the defaults and what is exported here), the keys into the data folder.
timeout 120 "$lnmp_bin" quickstart --dir "$work/quickstart" --domain bridge.test --admin alice \
  --hostname mx.bridge.test >quickstart.out 2>quickstart.err || {
  echo "quickstart failed:" >&2
  cat quickstart.out quickstart.err >&2
  exit 1
}
alice_pw=alice-password-1
printf '%s\n' "$alice_pw" | timeout 60 "$lnmp_bin" user passwd alice --password-stdin >/dev/null

# --- DNS: our domain with this run's DKIM keys, the remote and legacy domains ----------

zone="$work/outbound.zone"
{
  echo '# Written by tests/interop/outbound_peers.sh for one run. Everything is on 127.0.0.1.'
  echo 'bridge.test            TXT   "v=spf1 ip4:127.0.0.1 -all"'
  echo '_dmarc.bridge.test     TXT   "v=DMARC1; p=reject; adkim=s; aspf=s"'
  echo 'bridge.test            MX    10 mx.bridge.test'
  echo 'mx.bridge.test         A     127.0.0.1'
  # The DKIM records as quickstart prints them: "<name>.  IN TXT  "..." "..."".
  sed -n 's/^\([^ ]*\._domainkey\.bridge\.test\.\) *IN TXT *\(.*\)$/\1 TXT \2/p' quickstart.out
  for d in remote.test example.org; do
    echo "$d TXT \"v=spf1 ip4:127.0.0.1 -all\""
    echo "_dmarc.$d TXT \"v=DMARC1; p=reject\""
    echo "$d MX 10 mx.$d"
    echo "mx.$d A 127.0.0.1"
  done
} >"$zone"
for sel in lnmp1r lnmp1e; do
  grep -q "^$sel\._domainkey\.bridge\.test\. TXT \"v=DKIM1" "$zone" || {
    echo "no DKIM record for selector $sel in quickstart's output:" >&2
    cat quickstart.out >&2
    exit 1
  }
done
for f in "$work/data/dkim/lnmp1r.rsa.pem" "$work/data/dkim/lnmp1e.ed25519.pem"; do
  [ -s "$f" ] || { echo "quickstart wrote no $f" >&2; ls -lR "$work/data" >&2; exit 1; }
done

timeout 1800 "$dns_stub_bin" --listen 127.0.0.1:0 --zone "$zone" >dns.out 2>dns.err &
dns_pid=$!
wait_for dns.out '^dns stub listening on ' "$dns_pid"
dns_addr=$(sed -n 's/^dns stub listening on //p' dns.out)
export LNMP__DNS__NAMESERVERS="[\"$dns_addr\"]"

# --- the daemon ------------------------------------------------------------------------

runs=0
# start_daemon: `lnmp-bridge serve` with what is exported now; its output in daemon-N.out
# and daemon-N.err; sets mx, sub and imap to its listeners' ports.
start_daemon() {
  runs=$((runs + 1))
  daemon_out="$work/daemon-$runs.out"
  daemon_err="$work/daemon-$runs.err"
  timeout 1800 "$lnmp_bin" serve >"$daemon_out" 2>"$daemon_err" &
  daemon_pid=$!
  wait_for "$daemon_out" '^Mail clients:' "$daemon_pid"
  port_of() { sed -n "s/^  $1 on 127\.0\.0\.1:\([0-9]*\)\$/\1/p" "$daemon_out"; }
  mx=$(port_of 'SMTP MX (STARTTLS)')
  sub=$(port_of 'SMTP submission (STARTTLS, AUTH)')
  imap=$(port_of 'IMAP (STARTTLS)')
  for p in "$mx" "$sub" "$imap"; do
    if [ -z "$p" ] || ! accepts "$p"; then
      echo "a listener is missing or closed:" >&2
      cat "$daemon_out" "$daemon_err" >&2
      exit 1
    fi
  done
  echo "# daemon run $runs: MX $mx, submission $sub, IMAP $imap; DNS stub $dns_addr; MX sink $mx_sink_port"
}
# kill_daemon: SIGKILL to the daemon itself (the child of its `timeout` wrapper).
kill_daemon() {
  local real
  real=$(pgrep -P "$daemon_pid" | head -1 || true)
  if [ -n "$real" ]; then kill -9 "$real" 2>/dev/null || true; fi
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
}

start_daemon

# --- helpers ---------------------------------------------------------------------------


auth_alice=(--tls --auth PLAIN --auth-user alice --auth-password "$alice_pw")

# check_sink WHAT SINK-DIR ARGS...: `outbound_sink.py check` on that sink's records
# (waiting for the message up to 60 s); on failure shows its report, the sink's log and
# the daemon's.
check_sink() {
  local what=$1 dir=$2 l
  shift 2
  n=$((n + 1))
  l="$work/check-$n.log"
  { printf '$ outbound_sink.py check --dir %s' "$(basename "$dir")"; printf ' %q' "$@"; printf '\n'; } >"$l"
  if timeout 300 "$py" "$sink_py" check --dir "$dir" --zone "$zone" "$@" >>"$l" 2>&1; then
    ok "$what"
  else
    not_ok "$what" "$l" "$dir.out" "$daemon_err"
  fi
}
sink_get() { # SINK-DIR ARGS...: `outbound_sink.py get`
  local dir=$1
  shift
  timeout 120 "$py" "$sink_py" get --dir "$dir" "$@"
}

# queue: `lnmp-bridge queue list --all` (sent ones too), also kept in queue.txt.
queue() {
  timeout 60 "$lnmp_bin" queue list --all >"$work/queue.txt" 2>&1 || {
    echo "queue list failed:" >&2
    cat "$work/queue.txt" >&2
    return 1
  }
  cat "$work/queue.txt"
}
# queue_is RCPT STATE [MIN-ATTEMPTS [DETAIL-ERE]]: within 60 s, `queue list` has exactly
# one line for RCPT, in STATE, with at least MIN-ATTEMPTS attempts and a detail matching.
queue_is() {
  local lines
  for _ in $(seq 1 120); do
    lines=$(queue | awk -v r="$1" '$4 == r') || true
    if [ "$(grep -c . <<<"$lines")" = 1 ] &&
      awk -v s="$2" -v a="${3:-0}" -v d="${4:-}" '{
          split($3, kv, "="); detail = ""
          for (i = 5; i <= NF; i++) detail = detail (i > 5 ? " " : "") $i
          exit !($2 == s && kv[1] == "attempts" && kv[2] + 0 >= a + 0 && (d == "" || tolower(detail) ~ d))
        }' <<<"$lines"; then
      return 0
    fi
    sleep 0.5
  done
  echo "# queue_is $*: no such line; last queue list:" >>"$work/queue.txt"
  return 1
}

# wait_for_line FILE ERE: a line of FILE matches within 30 s.
wait_for_line() {
  for _ in $(seq 1 300); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# in_inbox USER SUBJECT: `lnmp-bridge user inbox USER` shows a message with that subject.
in_inbox() {
  timeout 120 "$lnmp_bin" user inbox "$1" >"$work/inbox-$1.txt" 2>&1 &&
    grep -Fxq "subject: $2" <(tr -d '\r' <"$work/inbox-$1.txt")
}
mid() { printf '<%s.%s@%s>' "$1" "$$" "$2"; } # NAME DOMAIN: a Message-ID of this run

# --- 1. submission to a remote address -------------------------------------------------
# The body has lines starting with dots and a lone dot: swaks dot-stuffs them, the daemon
# must undo that, stuff them again towards the MX, and the sink undo it again. The
# message file has no final CRLF: swaks adds it.

sub_mid=$(mid submission bridge.test)
printf 'first line\r\n.leading dot\r\n..two leading dots\r\n.\r\n. dot space\r\nlast line\r\n' >submission.body
{
  printf 'From: Alice <alice@bridge.test>\r\nTo: Carol <carol@remote.test>\r\n'
  printf 'Bcc: hidden@remote.test\r\nSubject: outbound submission\r\n'
  printf 'Message-ID: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n' "$sub_mid" "$(date -R)"
  printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\n'
  head -c -2 submission.body
} >submission.eml
swaks_run --port "$sub" "${auth_alice[@]}" --from alice@bridge.test \
  --to carol@remote.test,hidden@remote.test --data @submission.eml
check "submission: alice to carol@remote.test (and Bcc hidden@remote.test) accepted" "$log" -- \
  eval 'status_is 0 && replied "235 " && replied "250 2\.0\.0"'
check_sink "submission: carol's copy reaches the MX: MAIL FROM alice@bridge.test, RCPT carol, DKIM rsa-sha256 and ed25519-sha256 (d=bridge.test) verify, DMARC-aligned, no Bcc, body with dot lines intact" \
  "$work/mx-sink" --rcpt carol@remote.test --message-id "$sub_mid" --count 1 --settle 2 \
  --mail-from alice@bridge.test --from-addr alice@bridge.test \
  --dkim-domain bridge.test --dkim lnmp1r:rsa-sha256 --dkim lnmp1e:ed25519-sha256 --dkim-all-pass --aligned \
  --no-header Bcc --body-endswith submission.body
check_sink "submission: the Bcc recipient's copy reaches the MX, without a Bcc field either" \
  "$work/mx-sink" --rcpt hidden@remote.test --message-id "$sub_mid" --count 1 --settle 0 \
  --mail-from alice@bridge.test --no-header Bcc --dkim-all-pass --aligned
check "submission: queue list shows carol@remote.test sent" "$work/queue.txt" "$daemon_err" -- \
  queue_is carol@remote.test sent 1

# --- 2. forwarding ---------------------------------------------------------------------

n=$((n + 1))
log="$work/forward-$n.log"
rc=0
timeout 60 "$lnmp_bin" user forward alice fwd@remote.test >"$log" 2>&1 || rc=$?
check "forward: user forward alice fwd@remote.test" "$log" -- status_is 0

bob_mid=$(mid bob example.org)
swaks_run --port "$mx" --from bob@example.org --to alice@bridge.test \
  --header "Subject: to be forwarded" --header "Message-Id: $bob_mid" --body "hello alice, from bob"
check "forward: bob@example.org's mail to alice accepted at the MX (SPF pass, aligned)" "$log" -- \
  eval 'status_is 0 && replied "250 2\.0\.0"'
check_sink "forward: a copy reaches fwd@remote.test: MAIL FROM alice@bridge.test, From @bridge.test naming bob@example.org, Reply-To reply+<token>@bridge.test, Message-ID kept, X-LNMP-Hops, DKIM aligned" \
  "$work/mx-sink" --rcpt fwd@remote.test --subject "to be forwarded" --count 1 --settle 2 \
  --mail-from alice@bridge.test --from-domain bridge.test --from-name-contains bob@example.org \
  --header-re 'Reply-To=reply\+[^@<>\s]+@bridge\.test' --header-id "Message-ID=$bob_mid" \
  --has-header X-LNMP-Hops --dkim-domain bridge.test --dkim lnmp1r:rsa-sha256 --dkim lnmp1e:ed25519-sha256 \
  --dkim-all-pass --aligned
reply_to=$(sink_get "$work/mx-sink" --rcpt fwd@remote.test --subject "to be forwarded" --wait 1 \
  --header Reply-To --addr 2>/dev/null || true)
echo "# reply address: ${reply_to:-(none)}"

# --- 3. the reply round trip -----------------------------------------------------------

if [ -n "$reply_to" ]; then
  swaks_run --port "$mx" --from fwd@remote.test --to "$reply_to" \
    --header "Subject: Re: to be forwarded" --header "In-Reply-To: $bob_mid" \
    --header "References: $bob_mid" --body "the answer, from alice's forward address"
  check "reply: fwd@remote.test's answer to $reply_to accepted at the MX" "$log" -- \
    eval 'status_is 0 && replied "250 2\.0\.0"'
  check_sink "reply: it reaches bob@example.org from alice@bridge.test, In-Reply-To bob's Message-ID, DKIM aligned" \
    "$work/mx-sink" --rcpt bob@example.org --subject "Re: to be forwarded" --count 1 --settle 2 \
    --from-addr alice@bridge.test --header-id "In-Reply-To=$bob_mid" \
    --dkim-domain bridge.test --dkim lnmp1r:rsa-sha256 --dkim lnmp1e:ed25519-sha256 --dkim-all-pass --aligned

  swaks_run --port "$mx" --from mallory@remote.test --to "$reply_to" \
    --header "Subject: Re: to be forwarded, says mallory" --header "In-Reply-To: $bob_mid" \
    --body "not the forward address"
  check "reply: the same Reply-To from mallory@remote.test refused with a 5xx (at RCPT or end of DATA)" "$log" -- \
    eval '{ status_is 24 || status_is 26; } && replied "5[0-9][0-9][ -]"'
  check_sink "reply: nothing from mallory reaches bob@example.org" \
    "$work/mx-sink" --rcpt bob@example.org --subject "Re: to be forwarded, says mallory" --count 0 --settle 5
else
  not_ok "reply: the forwarded copy has a Reply-To address to answer (see the forward check)"
fi

# --- forwarding off ---------------------------------------------------------------------

n=$((n + 1))
log="$work/forward-$n.log"
rc=0
timeout 60 "$lnmp_bin" user forward alice --off >"$log" 2>&1 || rc=$?
check "forward off: user forward alice --off" "$log" -- status_is 0
swaks_run --port "$mx" --from bob@example.org --to alice@bridge.test \
  --header "Subject: not forwarded any more" --body "only for alice's inbox"
check "forward off: bob's next mail lands in alice's inbox" "$log" "$work/inbox-alice.txt" -- \
  eval 'status_is 0 && in_inbox alice "not forwarded any more"'
check_sink "forward off: no copy of it reaches fwd@remote.test" \
  "$work/mx-sink" --rcpt fwd@remote.test --subject "not forwarded any more" --count 0 --settle 5
check "forward off: queue list still has just the one recipient fwd@remote.test (sent)" "$work/queue.txt" -- \
  queue_is fwd@remote.test sent 1

# --- 4. permanent failure: a DSN for alice ---------------------------------------------

swaks_run --port "$sub" "${auth_alice[@]}" --from alice@bridge.test --to nobody@remote.test \
  --header "Subject: to nobody" --body "this one bounces"
check "bounce: alice's mail to nobody@remote.test accepted at submission" "$log" -- \
  eval 'status_is 0 && replied "250 2\.0\.0"'
check "bounce: the MX refused nobody@remote.test at RCPT (550 5.1.1)" "$work/mx-sink.out" "$daemon_err" -- \
  wait_for_line "$work/mx-sink.out" '^rcpt refused \(550\): nobody@remote\.test$'
check "bounce: queue list shows nobody@remote.test failed" "$work/queue.txt" "$daemon_err" -- \
  queue_is nobody@remote.test failed 1
# dsn_in_inbox: alice's INBOX, read over IMAP, gets the DSN within 60 s.
dsn_in_inbox() {
  timeout 120 "$py" "$sink_py" imap --port "$imap" --user alice --password "$alice_pw" --wait 60 \
    --content-type multipart/report --report-type delivery-status \
    --regex '^Status:\s*5\.1\.1' --regex '^Action:\s*failed' \
    --regex '^Final-Recipient:.*nobody@remote\.test' >"$log" 2>&1
}
n=$((n + 1))
log="$work/imap-$n.log"
check "bounce: alice's INBOX (IMAP) has a multipart/report; report-type=delivery-status with Status 5.1.1 for nobody@remote.test" "$log" "$daemon_err" -- \
  dsn_in_inbox

# --- 5. smarthost down, SIGKILL, restart -------------------------------------------------
# A second sink is the smarthost: STARTTLS with a certificate of a CA made here (given to
# the daemon as tls_ca_file), then AUTH. It is not running while the messages are sent.

mkdir -p tls
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbound_peers test CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout tls/ca.key -out tls/ca.pem 2>tls/openssl.log
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout tls/relay.key -out tls/relay.csr 2>>tls/openssl.log
printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
  "extendedKeyUsage=serverAuth" "subjectAltName=IP:127.0.0.1,DNS:localhost" >tls/relay.ext
openssl x509 -req -in tls/relay.csr -CA tls/ca.pem -CAkey tls/ca.key -CAcreateserial -days 2 \
  -extfile tls/relay.ext -out tls/relay.pem 2>>tls/openssl.log
relay_port=$(free_port)
relay_user=relay-user
relay_pw=relay-password-333

stop "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
export LNMP__OUTBOUND__SMARTHOST="127.0.0.1:$relay_port"
export LNMP__OUTBOUND__SMARTHOST_TLS=starttls
export LNMP__OUTBOUND__SMARTHOST_USERNAME="$relay_user"
export LNMP__OUTBOUND__SMARTHOST_PASSWORD="$relay_pw"
export LNMP__OUTBOUND__TLS_CA_FILE="$work/tls/ca.pem"
start_daemon

for i in 1 2 3; do
  swaks_run --port "$sub" "${auth_alice[@]}" --from alice@bridge.test --to "q$i@remote.test" \
    --header "Subject: queued $i" --header "Message-Id: $(mid "queued-$i" bridge.test)" --body "queued message $i"
  check "smarthost: message $i (to q$i@remote.test) accepted at submission" "$log" -- \
    eval 'status_is 0 && replied "250 2\.0\.0"'
done
for i in 1 2 3; do
  check "smarthost: queue list shows q$i@remote.test queued, attempts >= 1, a connection error" "$work/queue.txt" "$daemon_err" -- \
    queue_is "q$i@remote.test" queued 1 'connect|refused'
done

kill_daemon
start_daemon
timeout 1800 "$py" "$sink_py" serve --dir "$work/relay-sink" --port "$relay_port" \
  --tls-cert tls/relay.pem --tls-key tls/relay.key --auth "$relay_user:$relay_pw" >relay-sink.out 2>relay-sink.err &
relay_sink_pid=$!
wait_for relay-sink.out '^sink listening on ' "$relay_sink_pid"
n=$((n + 1))
log="$work/flush-$n.log"
rc=0
timeout 60 "$lnmp_bin" queue flush >"$log" 2>&1 || rc=$?
check "smarthost: after SIGKILL and restart, with the smarthost up, queue flush succeeds" "$log" -- status_is 0
for i in 1 2 3; do
  check_sink "smarthost: message $i arrives exactly once at the smarthost, over STARTTLS, after AUTH as $relay_user, DKIM aligned" \
    "$work/relay-sink" --message-id "$(mid "queued-$i" bridge.test)" --count 1 --settle 3 \
    --has-rcpt "q$i@remote.test" --mail-from alice@bridge.test --tls --auth "$relay_user" \
    --dkim-domain bridge.test --dkim lnmp1r:rsa-sha256 --dkim lnmp1e:ed25519-sha256 --dkim-all-pass --aligned
done
for i in 1 2 3; do
  check "smarthost: queue list shows q$i@remote.test sent" "$work/queue.txt" "$daemon_err" -- \
    queue_is "q$i@remote.test" sent 1
done

if kill -0 "$daemon_pid" 2>/dev/null; then
  ok "lnmp-bridge is still running after the suite"
else
  not_ok "lnmp-bridge is still running after the suite" "$daemon_err"
fi
# Errors the daemon logged (shown, not counted: some are expected, e.g. the smarthost down).
for f in "$work"/daemon-*.err; do
  if grep -Eq ' (ERROR|WARN) ' "$f" 2>/dev/null; then
    echo "# $(basename "$f"): the daemon logged warnings or errors:"
    grep -E ' (ERROR|WARN) ' "$f" | head -20 | sed 's/^/#   /'
  fi
done

echo "outbound_peers: $passed passed, $failed failed"
[ "$failed" = 0 ]
