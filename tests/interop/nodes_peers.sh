#!/usr/bin/env bash
# Several nodes: two daemons (node A and node B) serving one domain on one PostgreSQL
# database, with real peers around them: an aiosmtpd MTA as every remote domain's MX
# (tests/interop/nodes_client.py sink, built on outbound_sink.py), Python's smtplib as
# mail clients and remote senders, raw IMAP sessions (nodes_client.py) timing IDLE.
#
#   PYTHON=<venv>/bin/python tests/interop/nodes_peers.sh
#
# 1. Users and mailboxes are shared: a user added with node A's CLI logs in on node B.
# 2. IDLE on node B wakes within 1 s of node A's MX answering 250 for a message to it
#    (the latency is printed).
# 3. A flag stored on node B reaches an IDLE on node A within 1 s; a 200 kB attachment
#    in mail accepted by A reads back whole on B.
# 4. The outbound queue is worked by both nodes: with the remote MX down, 60 messages are
#    submitted through both nodes' submission ports; then the MX comes up, `queue flush`,
#    and every message arrives exactly once (Message-IDs counted at the MX); both nodes'
#    logs say they delivered some.
# 5. The relay outbox is worked by both nodes: a third daemon (other.test, carol, on its
#    own SQLite) is the remote LNMP side, its relay behind a proxy (nodes_client.py
#    ws-count) that logs every OK the relay answers to a PUBLISH and which process sent
#    it. With the relay down (the nodes look carol up at its HTTPS port when a message
#    is submitted, so only the relay is down), alice sends 20 messages to carol's LNMP
#    address through both nodes' submission ports; then it comes up: each message id is
#    published and accepted exactly once, carol's INBOX there has each message once, and
#    the shared outbox says all sent. (Which node published how many is shown, not
#    checked: a node claims up to 64 due rows at once, so one often takes the burst.)
#    Then a node killed holding outbox claims: the proxy holds every connection, 6 more
#    messages are sent, the node whose publish is held gets SIGKILL, the relay is let
#    free; the other node leaves the dead one's leased claims alone, and takes them over
#    once the lease has run out: every message accepted exactly once. The claim lasts
#    relay_client.claim_seconds (35 s here; it must outlast a publish attempt, payment
#    included). The killed node is started again.
# 6. A node killed mid-work on the outbound queue: the MX holds the first RCPT of each of
#    8 messages for 8 s, so both nodes hold claims; node A gets SIGKILL meanwhile. Node
#    B leaves A's leased claims alone while the lease lasts (outbound.claim_seconds, 65 s
#    here: longer than an attempt can take), then takes them over and every message
#    arrives exactly once.
#
# Both nodes use one data folder (the master key, DKIM keys, TLS certificate and the
# attachment blobs: a message whose attachments one node stored must be readable on the
# other, and blobs are plain files under data_dir/blobs, not in the database).
#
# Needs a PostgreSQL server: LNMP_TEST_DATABASE_URL (default
# postgres://postgres@127.0.0.1:5432/test) names a database on it; a fresh database
# lnmp_nodes_<pid> is created beside it for the run and dropped at exit. Needs psql, a
# Python (PYTHON, default python3) with tests/interop/requirements.txt installed
# (aiosmtpd). Binaries: LNMP_BIN and DNS_STUB_BIN, by default
# ${CARGO_TARGET_DIR:-target}/debug/lnmp-bridge and .../examples/dns_stub (cargo build
# --locked --bin lnmp-bridge --example dns_stub). Everything runs on loopback in a
# temporary folder, removed on exit (kept when KEEP_WORK=1). Each check prints "ok - ..."
# or "not ok - ..."; the last line counts them, and the exit status is 1 if any failed.
# shellcheck disable=SC2016 # the checks given to eval expand when they run
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_binaries lnmp-bridge dns_stub
py="${PYTHON:-python3}"
client_py="$root/tests/interop/nodes_client.py"
base_url="${LNMP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

need_tools "Debian: postgresql-client" psql
"$py" -c 'import aiosmtpd' 2>/dev/null || {
  echo "$py lacks aiosmtpd: set PYTHON to a Python with tests/interop/requirements.txt" >&2
  exit 1
}

# Only what this script sets reaches the daemons: no config file, no inherited overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

# The run's database, on the server of the given URL (its query string, if any, kept).
server_url="${base_url%%\?*}"
server_url="${server_url%/*}"
query=""
case "$base_url" in *\?*) query="?${base_url#*\?}" ;; esac
admin_url="$server_url/postgres$query"
db="lnmp_nodes_$$"
db_url="$server_url/$db$query"
psql "$admin_url" -qtAc 'select 1' >/dev/null 2>&1 || {
  echo "PostgreSQL does not answer at $admin_url (set LNMP_TEST_DATABASE_URL)" >&2
  exit 1
}

work=$(mktemp -d)
dns_pid=""
r_pid=""
proxy_pid=""
a_pid=""
b_pid=""
sink_pid=""
db_made=0
cleanup() {
  stop "$a_pid"
  stop "$b_pid"
  stop "$sink_pid"
  stop "$r_pid"
  stop "$proxy_pid"
  stop "$dns_pid"
  wait 2>/dev/null || true
  if [ "$db_made" = 1 ]; then
    psql "$admin_url" -qtAc "drop database if exists \"$db\" with (force)" >/dev/null 2>&1 ||
      echo "# could not drop database $db" >&2
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

psql "$admin_url" -qtAc "create database \"$db\"" >/dev/null
db_made=1
sql() { psql "$db_url" -qtAc "$1"; }
# sql_reaches VALUE QUERY: until QUERY answers VALUE (30 s at most).
sql_reaches() {
  for _ in $(seq 1 60); do
    [ "$(sql "$2")" = "$1" ] && return 0
    sleep 0.5
  done
  return 1
}

# --- DNS: the remote domain's MX and the stranger's SPF, all on 127.0.0.1 -----------------

zone="$work/nodes.zone"
{
  echo '# Written by tests/interop/nodes_peers.sh for one run. Everything is on 127.0.0.1.'
  echo 'bridge.test MX 10 mx.bridge.test'
  echo 'mx.bridge.test A 127.0.0.1'
  for d in remote.test example.org; do
    echo "$d TXT \"v=spf1 ip4:127.0.0.1 -all\""
    echo "$d MX 10 mx.$d"
    echo "mx.$d A 127.0.0.1"
  done
} >"$zone"
timeout 900 "$dns_stub_bin" --listen 127.0.0.1:0 --zone "$zone" >dns.out 2>dns.err &
dns_pid=$!
wait_for dns.out '^dns stub listening on ' "$dns_pid"
dns_addr=$(sed -n 's/^dns stub listening on //p' dns.out)

# --- what both nodes share ---------------------------------------------------------------

sink_port=$(free_port)
export LNMP__SERVER__DATA_DIR="$work/data"
export LNMP__SERVER__DOMAIN=bridge.test
export LNMP__SERVER__HOSTNAME=mx.bridge.test
export LNMP__DATABASE__URL="$db_url"
export LNMP__DNS__NAMESERVERS="[\"$dns_addr\"]"
export LNMP__HTTP__LISTEN=127.0.0.1:0
loopback_listeners
# IDLE must wake through NOTIFY, not through its own periodic look.
export LNMP__IMAP__IDLE_POLL_SECONDS=60
# Strangers' mail passes free here: the paywall has its own checks (payments_peers.sh).
export LNMP__PRICING__STRANGER=0
# Every remote MX is the sink. Each node looks at the queue every second and works at
# most 4 deliveries at once (so one node cannot take the whole queue in one claim); a
# failed attempt waits a minute (the test flushes instead).
export LNMP__OUTBOUND__MX_PORT="$sink_port"
export LNMP__OUTBOUND__POLL_SECONDS=1
export LNMP__OUTBOUND__MAX_PARALLEL=4
export LNMP__OUTBOUND__TIMEOUT_SECONDS=10
export LNMP__OUTBOUND__FINAL_REPLY_TIMEOUT_SECONDS=10
# A dead node's claims are taken over after this (an attempt can take 6 x 10 s).
export LNMP__OUTBOUND__CLAIM_SECONDS=65
export LNMP__OUTBOUND__RETRY_BASE_SECONDS=60
export LNMP__OUTBOUND__RETRY_MAX_SECONDS=120

# quickstart writes its config file into its own folder (the nodes run on the defaults
# and what is exported here), the keys into the shared data folder, alice into the db.
timeout 120 "$lnmp_bin" quickstart --dir "$work/quickstart" --domain bridge.test --admin alice \
  --hostname mx.bridge.test --database-url "$db_url" >quickstart.out 2>quickstart.err || {
  echo "quickstart failed:" >&2
  cat quickstart.out quickstart.err >&2
  exit 1
}
alice_pw=alice-password-1
printf '%s\n' "$alice_pw" | timeout 60 "$lnmp_bin" user passwd alice --password-stdin >/dev/null

# --- the remote LNMP domain: other.test (carol) on its own daemon and SQLite ------------------
# Its relay is plain ws:// behind the counting proxy, which is what its lookup documents
# advertise; the nodes look addresses up at its HTTPS port and trust its certificate.
# The nodes look an address up when the message is submitted (a failed lookup is a 451),
# so "other.test down" means its relay down: the proxy is not running yet.

r_http=$(free_port)
r_relay=$(free_port)
r_proxy=$(free_port)
r_env=(env -u LNMP__DATABASE__URL LNMP__SERVER__DATA_DIR="$work/data-r" LNMP__SERVER__DOMAIN=other.test
  LNMP__SERVER__HOSTNAME=mx.other.test LNMP__HTTP__LISTEN="127.0.0.1:$r_http"
  LNMP__RELAY__LISTEN="127.0.0.1:$r_relay" LNMP__RELAY__TLS=false
  LNMP__RELAY__PUBLIC_URL="ws://127.0.0.1:$r_proxy")
carol_pw=carol-password-1
timeout 120 "${r_env[@]}" "$lnmp_bin" quickstart --dir "$work/quickstart-r" --domain other.test \
  --admin carol --hostname mx.other.test >quickstart-r.out 2>quickstart-r.err || {
  echo "quickstart of other.test failed:" >&2
  cat quickstart-r.out quickstart-r.err >&2
  exit 1
}
printf '%s\n' "$carol_pw" | timeout 60 "${r_env[@]}" "$lnmp_bin" user passwd carol --password-stdin >/dev/null
carol_addr=$(timeout 60 "${r_env[@]}" "$lnmp_bin" user list 2>/dev/null | awk '$1 == "carol" { print $3 }')
[[ "$carol_addr" =~ ^carol#[^@[:space:]]+@other\.test$ ]] || {
  echo "no LNMP address for carol in other.test's user list: '$carol_addr'" >&2
  exit 1
}
r_out="$work/remote.out"
r_err="$work/remote.err"
timeout 900 "${r_env[@]}" "$lnmp_bin" serve >"$r_out" 2>"$r_err" &
r_pid=$!
wait_for "$r_out" '^Mail clients:' "$r_pid"
r_imap=$(sed -n 's/^  IMAP (STARTTLS) on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$r_out")
# The relay's address (the proxy) answers nothing until check 5 starts the proxy.
[ -s "$work/data-r/tls/cert.pem" ] || { echo "other.test's daemon made no data-r/tls/cert.pem" >&2; exit 1; }
export LNMP__RELAY_CLIENT__LOOKUP_BASE="https://localhost:$r_http"
export LNMP__RELAY_CLIENT__CA_FILE="$work/data-r/tls/cert.pem"
export LNMP__RELAY_CLIENT__PUBLISH_TIMEOUT_SECONDS=5
# An outbox attempt can take 2 x 5 s publishing + 4 x 3 s paying + 10 s.
export LNMP__LIGHTNING__TIMEOUT_SECONDS=3
export LNMP__RELAY_CLIENT__CLAIM_SECONDS=35
export LNMP__RELAY_CLIENT__RETRY_BASE_SECONDS=1
export LNMP__RELAY_CLIENT__RETRY_MAX_SECONDS=3

# --- the nodes -----------------------------------------------------------------------------

# start_node NAME: `lnmp-bridge serve` as node NAME (a or b) with its own relay port;
# output in node-NAME.out/.err; sets NAME_pid, NAME_mx, NAME_sub, NAME_imap.
start_node() {
  local name=$1 out="$work/node-$1.out" err="$work/node-$1.err" pid p
  # A restarted node's old output goes first: wait_for must not read it.
  if [ -e "$out" ]; then
    mv "$out" "$out.old"
    mv "$err" "$err.old"
  fi
  LNMP__RELAY__LISTEN="127.0.0.1:$(free_port)" timeout 900 "$lnmp_bin" serve >"$out" 2>"$err" &
  pid=$!
  printf -v "${name}_pid" '%s' "$pid"
  wait_for "$out" '^Mail clients:' "$pid"
  # The daemon itself (the child of its timeout wrapper): the relay proxy names it.
  printf -v "${name}_real" '%s' "$(pgrep -P "$pid" | head -1 || true)"
  port_of() { sed -n "s/^  $1 on 127\.0\.0\.1:\([0-9]*\)\$/\1/p" "$out"; }
  printf -v "${name}_mx" '%s' "$(port_of 'SMTP MX (STARTTLS)')"
  printf -v "${name}_sub" '%s' "$(port_of 'SMTP submission (STARTTLS, AUTH)')"
  printf -v "${name}_imap" '%s' "$(port_of 'IMAP (STARTTLS)')"
  for p in "${name}_mx" "${name}_sub" "${name}_imap"; do
    if [ -z "${!p}" ] || ! accepts "${!p}"; then
      echo "node $name: a listener is missing or closed:" >&2
      cat "$out" "$err" >&2
      exit 1
    fi
  done
}
# kill_node NAME: SIGKILL to the daemon itself (the child of its `timeout` wrapper).
kill_node() {
  local v="${1}_pid" real
  real=$(pgrep -P "${!v}" | head -1 || true)
  if [ -n "$real" ]; then kill -9 "$real" 2>/dev/null || true; fi
  wait "${!v}" 2>/dev/null || true
  printf -v "$v" '%s' ""
}

# One after the other: the first start makes the TLS certificate in the shared folder.
a_mx="" a_sub="" a_imap="" a_real="" b_mx="" b_sub="" b_imap="" b_real=""
start_node a
start_node b
echo "# database $db; node A: MX $a_mx, submission $a_sub, IMAP $a_imap; node B: MX $b_mx, submission $b_sub, IMAP $b_imap; DNS $dns_addr; remote MX (down) $sink_port"

# run_logged NAME CMD...: runs CMD (timeout 120 s) with its output in $work/NAME-<n>.log
# ($log), exit status in $rc.
run_logged() {
  local name=$1
  shift
  n=$((n + 1))
  log="$work/$name-$n.log"
  { printf '$'; printf ' %q' "$@"; printf '\n'; } >"$log"
  rc=0
  timeout 120 "$@" >>"$log" 2>&1 || rc=$?
  echo "# exit status $rc" >>"$log"
}
client() { run_logged "$1" "$py" "$client_py" "${@:2}"; }
# summary: the last line of $log before its exit status.
summary() { grep -v '^# exit status' "$log" | tail -1; }
latency_of() { sed -n 's/^latency \([0-9.]*\)$/\1/p' "$log" | tail -1; }
# delivered_by NODE PREFIX: how many "delivered" lines for recipients PREFIX<n>@remote.test
# the node logged.
delivered_by() {
  grep -E " delivered" "$work/node-$1.err" 2>/dev/null | grep -cE "to=$2[0-9]+@remote\.test" || true
}

# --- 1. users and mailboxes are shared ---------------------------------------------------

dave_pw=dave-password-1
run_logged user-add sh -c "printf '%s\n' '$dave_pw' | '$lnmp_bin' user add dave --password-stdin"
check "users: lnmp-bridge user add dave (node A's config and database)" "$log" -- status_is 0
client login login --port "$b_imap" --user dave --password "$dave_pw"
check "users: dave logs in on node B's IMAP and selects INBOX" "$log" "$work/node-b.err" -- status_is 0
client login login --port "$b_imap" --user alice --password "$alice_pw"
check "users: alice (made by quickstart, password set by the CLI) logs in on node B's IMAP" "$log" "$work/node-b.err" -- status_is 0

# --- 2. mail accepted on A wakes IDLE on B -----------------------------------------------

client wake wake-on-mail --idle-port "$b_imap" --mx-port "$a_mx" --user dave --password "$dave_pw" \
  --rcpt dave@bridge.test --limit 1.0 --wait 10
check "IDLE: node B's IDLE sees \"* n EXISTS\" $(latency_of || true) s after node A's MX answered 250 (< 1 s)" \
  "$log" "$work/node-a.err" "$work/node-b.err" -- status_is 0

# --- 3. a flag stored on B reaches IDLE on A ------------------------------------------------

client flag wake-on-flag --idle-port "$a_imap" --store-port "$b_imap" --user dave --password "$dave_pw" \
  --limit 1.0 --wait 10
check "IDLE: a \\Flagged stored on node B reaches node A's IDLE $(latency_of || true) s after the STORE was sent (< 1 s)" \
  "$log" "$work/node-a.err" "$work/node-b.err" -- status_is 0

# --- 3b. attachments stored by one node read on the other ------------------------------------

client attachment attachment --mx-port "$a_mx" --imap-port "$b_imap" --user dave --password "$dave_pw" \
  --rcpt dave@bridge.test --size 200000 --wait 10
check "blobs: a 200 kB attachment in mail accepted by node A's MX reads back whole on node B's IMAP (one shared data folder)" \
  "$log" "$work/node-a.err" "$work/node-b.err" -- status_is 0

# --- 4. the outbound queue, worked by both nodes --------------------------------------------

total=60
half=$((total / 2))
rcpts_a=() rcpts_b=() ids=()
for i in $(seq 1 "$half"); do
  rcpts_a+=("q$i@remote.test")
  rcpts_b+=("q$((half + i))@remote.test")
  ids+=("<queue-a-$i@bridge.test>" "<queue-b-$i@bridge.test>")
done
client submit-a submit --port "$a_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${rcpts_a[@]}" --message-id-prefix queue-a
check "queue: $half messages submitted through node A (STARTTLS, AUTH) while the remote MX is down" "$log" -- status_is 0
client submit-b submit --port "$b_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${rcpts_b[@]}" --message-id-prefix queue-b
check "queue: $half messages submitted through node B while the remote MX is down" "$log" -- status_is 0

# Every recipient tried once (a connection error) and waiting.
queue_waiting() {
  sql_reaches "$total" "select count(*) from outbound_recipients where recipient like 'q%@remote.test' and state = 'queued' and attempts >= 1" &&
    return 0
  sql "select state, attempts, count(*) from outbound_recipients group by 1, 2" >"$work/queue-states.txt" 2>&1
  return 1
}
check "queue: within 30 s all $total recipients are queued with at least one failed attempt" \
  "$work/queue-states.txt" "$work/node-a.err" -- queue_waiting

# Each RCPT takes 0.2 s: one node alone would need 3 s for the 60, so the other, which
# looks every second, surely gets some.
timeout 900 "$py" "$client_py" sink --dir "$work/sink" --port "$sink_port" --hold-rcpt slow \
  --hold-seconds 8 --delay-seconds 0.2 >sink.out 2>sink.err &
sink_pid=$!
wait_for sink.out '^sink listening on ' "$sink_pid"
run_logged flush "$lnmp_bin" queue flush
check "queue: the remote MX up, lnmp-bridge queue flush (says: $(grep -m1 'due now' "$log" || true))" "$log" -- status_is 0
flushed=$SECONDS
client count count --dir "$work/sink" --message-id "${ids[@]}" --expect 1 --wait 60 --settle 3
check "queue: every one of the $total messages reaches the remote MX exactly once ($(summary))" \
  "$log" "$work/sink.out" "$work/node-a.err" "$work/node-b.err" -- status_is 0
echo "# queue: all delivered within $((SECONDS - flushed)) s of the flush (3 s of that waiting for more)"
by_a=$(delivered_by a q)
by_b=$(delivered_by b q)
check "queue: both nodes delivered some (node A logged $by_a, node B $by_b \"delivered\" lines, $((by_a + by_b)) in all)" \
  "$work/node-a.err" "$work/node-b.err" -- eval '[ "$by_a" -gt 0 ] && [ "$by_b" -gt 0 ] && [ "$((by_a + by_b))" = "$total" ]'
sent=$(sql "select count(*) from outbound_recipients where recipient like 'q%@remote.test' and state = 'sent'")
check "queue: the database has all $total recipients sent (has $sent)" "$work/node-a.err" -- test "$sent" = "$total"

# --- 5. the relay outbox, worked by both nodes -----------------------------------------------

relays=10
rl_rcpts=() rl_subjects=()
for i in $(seq 1 "$relays"); do
  rl_rcpts+=("$carol_addr")
  rl_subjects+=("relay-a $i" "relay-b $i")
done
client submit-relay-a submit --port "$a_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${rl_rcpts[@]}" --message-id-prefix relay-a
check "outbox: $relays messages to $carol_addr submitted through node A while other.test's relay is down" "$log" -- status_is 0
client submit-relay-b submit --port "$b_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${rl_rcpts[@]}" --message-id-prefix relay-b
check "outbox: $relays more through node B" "$log" -- status_is 0
sql_reaches $((2 * relays)) "select count(*) from relay_outbox where state = 'pending' and attempts >= 1" || true
sql "select state, attempts, count(*), min(last_error) from relay_outbox group by 1, 2 order by 1, 2" >"$work/outbox-states.txt" 2>&1
check "outbox: within 30 s the shared outbox has all $((2 * relays)) pending, tried at least once ($(sed -n 1p "$work/outbox-states.txt" | cut -c1-100))" \
  "$work/outbox-states.txt" "$work/node-a.err" "$work/node-b.err" -- \
  test "$(sql "select count(*) from relay_outbox where state = 'pending' and attempts >= 1")" = $((2 * relays))
timeout 900 "$py" "$client_py" ws-count --port "$r_proxy" --to-port "$r_relay" \
  --hold-file "$work/relay.hold" >proxy.out 2>proxy.err &
proxy_pid=$!
wait_for proxy.out '^proxy listening on ' "$proxy_pid"
echo "# other.test's relay up: ws://127.0.0.1:$r_proxy (the proxy) -> $r_relay; its IMAP $r_imap"
client tally ws-tally --log "$work/proxy.out" --expect $((2 * relays)) --wait 60 --settle 3
check "outbox: other.test's relay answered exactly one PUBLISH per message, each accepted ($(summary))" \
  "$log" "$work/node-a.err" "$work/node-b.err" "$r_err" -- status_is 0
pub_a=$(grep -cE "^OK [0-9a-f]{64} accepted=true .* pid=${a_real:-none}\$" "$work/proxy.out" || true)
pub_b=$(grep -cE "^OK [0-9a-f]{64} accepted=true .* pid=${b_real:-none}\$" "$work/proxy.out" || true)
# Shown, not checked: a node claims up to 64 due outbox rows at once, so a burst like
# this one often goes to one node whole.
echo "# outbox: node A published $pub_a, node B $pub_b (told by the connections' processes)"
client carol imap-count --port "${r_imap:-0}" --user carol --password "$carol_pw" --subject "${rl_subjects[@]}" --wait 30
check "outbox: carol's INBOX on other.test (IMAP) has each of the $((2 * relays)) messages once, by Subject ($(summary))" \
  "$log" "$r_err" -- status_is 0
outbox_sent=$(sql "select count(*) from relay_outbox where state = 'sent'")
check "outbox: the shared outbox says all $((2 * relays)) sent (says $outbox_sent)" "$work/node-a.err" -- \
  test "$outbox_sent" = $((2 * relays))

# --- 5b. a node killed while it holds outbox claims -------------------------------------------
# The proxy now holds every new connection (nothing reaches the relay); whichever node
# claims the next messages is SIGKILLed while it waits, then the relay is let free. The
# other node leaves the dead one's claims alone while their lease lasts, and takes them
# over when it has run out. That lease is publish_timeout x 2 + 30 s, plus 180 s when a
# payer is set up, which it always is (src/relay/outbox.rs: work_once; the dev wallet
# is one): 220 s here, longer than this test should wait, and there is no key for it.
# As in check 6, the test makes it run out in the database. The killed node is started
# again afterwards.

held=6
touch "$work/relay.hold"
appears "$work/proxy.out" '^holding from now on' "$proxy_pid" 10 || true
hold_rcpts=() hold_subjects=()
for i in $(seq 1 "$held"); do
  hold_rcpts+=("$carol_addr")
  hold_subjects+=("relay-held $i")
done
client submit-held submit --port "$a_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${hold_rcpts[@]}" --message-id-prefix relay-held
check "outbox kill: $held more to $carol_addr through node A, other.test's relay now holding every connection" "$log" -- status_is 0
holding() { grep -c '^HOLD ' "$work/proxy.out" || true; }
for _ in $(seq 1 100); do
  [ "$(holding)" -ge 1 ] && break
  sleep 0.1
done
victim_pid=$(sed -n 's/^HOLD pid=\([0-9]*\)$/\1/p' "$work/proxy.out" | head -1)
victim="" survivor=""
if [ -n "$victim_pid" ] && [ "$victim_pid" = "$a_real" ]; then victim=a survivor=b; fi
if [ -n "$victim_pid" ] && [ "$victim_pid" = "$b_real" ]; then victim=b survivor=a; fi
check "outbox kill: within 10 s a node's publish is held (node ${victim:-none}, pid ${victim_pid:-none})" \
  "$work/proxy.out" -- test -n "$victim"
if [ -n "$victim" ]; then
  kill_node "$victim"
  rm -f "$work/relay.hold"
  v=${survivor}_real
  survivor_real=${!v}
  # The survivor's own held attempts time out (5 s) and are retried (1 s and more): the
  # claims still leased 9 s after the kill are the dead node's.
  accepted_now() { grep -cE '^OK [0-9a-f]{64} accepted=true ' "$work/proxy.out" || true; }
  dead_claims_sql="select count(*) from relay_outbox where state = 'pending' and locked_until > extract(epoch from now())::bigint"
  killed_at=$SECONDS
  for _ in $(seq 1 60); do
    [ $((SECONDS - killed_at)) -ge 9 ] &&
      [ "$(accepted_now)" -ge $((2 * relays + held - $(sql "$dead_claims_sql"))) ] && break
    sleep 0.5
  done
  v_claims=$(sql "$dead_claims_sql")
  v_left=$(sql "select coalesce(max(locked_until) - extract(epoch from now())::bigint, 0) from relay_outbox where state = 'pending'")
  v_accepted=$(accepted_now)
  echo "# outbox kill: node $victim got SIGKILL; the relay, free again, accepted $v_accepted of $((2 * relays + held)) so far"
  check "outbox kill: the dead node $victim still holds claims ($v_claims messages pending, leased for $v_left s more) and node $survivor leaves them alone" \
    "$work/proxy.out" "$work/node-$survivor.err" -- \
    eval '[ "$v_claims" -ge 1 ] && [ "$((v_accepted + v_claims))" = $((2 * relays + held)) ]'
  client tally-held ws-tally --log "$work/proxy.out" --expect $((2 * relays + held)) --wait $((v_left + 30)) --settle 3
  check "outbox kill: with the lease run out, node $survivor takes them over: every message accepted by other.test's relay exactly once ($(summary))" \
    "$log" "$work/proxy.out" "$work/node-$survivor.err" "$r_err" -- status_is 0
  late=$(tail -n "$v_claims" "$work/proxy.out" | grep -cE "^OK [0-9a-f]{64} accepted=true .* pid=${survivor_real}\$" || true)
  check "outbox kill: the last $v_claims accepted came from node $survivor ($late of them); the shared outbox has nothing left pending" \
    "$work/proxy.out" -- eval '[ "$late" = "$v_claims" ] && [ "$(sql "select count(*) from relay_outbox where state <> '"'sent'"'")" = 0 ]'
  client carol-held imap-count --port "${r_imap:-0}" --user carol --password "$carol_pw" --subject "${hold_subjects[@]}" --wait 30
  check "outbox kill: carol's INBOX has each of the $held once ($(summary))" "$log" "$r_err" -- status_is 0
  start_node "$victim"
  v=${victim}_imap
  echo "# node $victim started again (IMAP ${!v})"
fi
rm -f "$work/relay.hold"

# --- 6. node A killed while it holds claims --------------------------------------------------

slow=8
rcpts=() sids=()
for i in $(seq 1 "$slow"); do
  rcpts+=("slow$i@remote.test")
  sids+=("<slow-$i@bridge.test>")
done
client submit-slow submit --port "$a_sub" --user alice --password "$alice_pw" --from alice@bridge.test \
  --rcpt "${rcpts[@]}" --message-id-prefix slow
check "kill: $slow messages submitted through node A; the remote MX holds each one's first RCPT for 8 s" "$log" -- status_is 0
holds() { grep -c '^hold rcpt slow' "$work/sink.out" || true; }
all_held() {
  for _ in $(seq 1 100); do
    [ "$(holds)" -ge "$slow" ] && return 0
    sleep 0.1
  done
  return 1
}
all_held || true
check "kill: within 10 s all $slow are being delivered (the MX holds $(holds) first RCPTs)" "$work/sink.out" -- \
  test "$(holds)" -ge "$slow"
kill_node a
killed=$SECONDS
echo "# kill: node A got SIGKILL with the MX holding $(holds) RCPTs"

# Node B finishes its own (the hold is 8 s); A's stay claimed by the dead node.
leased_sql="select count(*) from outbound_recipients where recipient like 'slow%' and state = 'queued' and locked_until > extract(epoch from now())::bigint"
b_settled() {
  for _ in $(seq 1 60); do
    [ "$(sql "select count(*) from outbound_recipients where recipient like 'slow%' and state = 'sent'")" -ge \
      $((slow - $(sql "$leased_sql"))) ] && [ $((SECONDS - killed)) -ge 10 ] && return 0
    sleep 0.5
  done
  return 1
}
b_settled || true
dead_claims=$(sql "$leased_sql")
lease_left=$(sql "select coalesce(max(locked_until) - extract(epoch from now())::bigint, 0) from outbound_recipients where recipient like 'slow%' and state = 'queued'")
by_b_before=$(delivered_by b slow)
arrived=$(grep -c '^message .* slow[0-9]*@remote\.test' "$work/sink.out" || true)
check "kill: the dead node A still holds claims ($dead_claims recipients queued, leased for $lease_left s more); node B delivered its $by_b_before" \
  "$work/node-b.err" -- eval '[ "$dead_claims" -ge 1 ] && [ "$((by_b_before + dead_claims))" = "$slow" ]'
check "kill: while the lease lasts node B leaves them alone ($arrived of $slow at the MX)" \
  "$work/sink.out" "$work/node-b.err" -- test "$arrived" = "$by_b_before"

# Node B takes the dead node's claims over once they run out (outbound.claim_seconds).
client count count --dir "$work/sink" --message-id "${sids[@]}" --expect 1 --wait $((lease_left + 30)) --settle 3
check "kill: with A's lease run out, node B takes its claims over: all $slow arrive exactly once ($(summary))" \
  "$log" "$work/sink.out" "$work/node-b.err" -- status_is 0
by_b_after=$(delivered_by b slow)
check "kill: node B delivered A's $dead_claims too (node B logged $by_b_after of $slow)" "$work/node-b.err" -- \
  test "$by_b_after" = "$slow"

if kill -0 "$b_pid" 2>/dev/null; then
  ok "node B is still running after the suite"
else
  not_ok "node B is still running after the suite" "$work/node-b.err"
fi
# Warnings the nodes logged (shown, not counted: some are expected, e.g. the MX down).
for f in "$work"/node-*.err; do
  if grep -Eq ' (ERROR|WARN) ' "$f" 2>/dev/null; then
    echo "# $(basename "$f"): $(grep -cE ' (ERROR|WARN) ' "$f") warnings or errors, the first of each kind:"
    grep -E ' (ERROR|WARN) ' "$f" | sed -E 's/^[^ ]+ +//' | sort -u -k1,3 | head -10 | sed 's/^/#   /'
  fi
done

echo "nodes_peers: $passed passed, $failed failed"
[ "$failed" = 0 ]
