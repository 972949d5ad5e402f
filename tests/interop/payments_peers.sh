#!/usr/bin/env bash
# shellcheck disable=SC2016 # check commands for eval, and IMAP flags, in single quotes
# The paywall against real peers: swaks as strangers' servers, Python's imaplib as
# alice's mail client, headless Chromium (Selenium, Debian's chromium-driver) on the pay
# page, LNbits with its FakeWallet as a real Lightning accounts server, and an aiosmtpd
# MTA (tests/interop/outbound_sink.py) as the strangers' MX that receives payment
# requests. Helpers in tests/interop/payments_client.py.
#
#   PYTHON=<venv>/bin/python tests/interop/payments_peers.sh
#
# 1. Dev wallet, retry mode: a stranger's mail is answered 450 4.7.0 with the amount and
#    the pay link (every reply line <= 512 octets), the status JSON says held, the
#    message waits in alice's Requests folder (not INBOX); `dev pay` of the BOLT11 turns
#    the status to delivered, the message to INBOX with $Paid and X-LNMP-Payment; the
#    sender's server sending the same message again gets 250 and no second copy; the
#    sender is alice's contact and alice's balance is 100 sats.
# 2. Requests -> INBOX: a held message moved with UID MOVE is let in for free: the
#    sender becomes a contact, the status says delivered, the balance does not change.
# 3. The pay page in headless Chromium: amount, recipient, the BOLT11, an SVG QR code that
#    reads back (zbarimg) as lightning:<BOLT11>, #status data-state=held; paid with `dev pay`,
#    it turns to delivered by itself (no reload). Screenshots before and after.
# 4. Accept mode: an SPF-authenticated stranger gets 250 and one payment request by
#    email (null sender, Auto-Submitted: auto-replied, amount, lightning: link, BOLT11,
#    pay link, nothing of the original); a second message within the window gets no
#    second request; a forged sender (SPF fails, no DKIM) gets 250 and no email.
# 5. LNbits (FakeWallet): the daemon on backend "lnbits" with wallet A's keys; a
#    stranger's 450, the BOLT11 paid from wallet B over LNbits' API, the message
#    delivered with $Paid, wallet A's balance up by the amount.
# 6. Auto-pay across two bridges, both on LNbits (a wallet of their own each): bridge B
#    (other.test, carol; its plain ws:// relay charges strangers 100 sats) beside this
#    one (bridge A, alice), which finds carol's lookup document at B's HTTPS port
#    (relay_client.lookup_base, B's certificate as relay_client.ca_file). alice's
#    balance is topped up by 1000 sats with `wallet deposit` paid over LNbits; her mail
#    to carol's LNMP address (submission, AUTH) is invoiced by B's relay, paid by A's
#    outbox from her balance (within the default auto-pay cap) and reaches carol's INBOX
#    on B with $Paid and X-LNMP-Payment: 100 sat; the balances (alice's, carol's and both
#    LNbits wallets) move by 100 sats. With alice's cap at 50 the next message waits:
#    she gets "Confirm paying 100 sats ..." in her INBOX with a /confirm/<token> link;
#    its page shows 100 sats, a POST pays and the message reaches carol, and a second
#    POST pays nothing.
#
# Everything runs inside a loopback-only network namespace (the script re-executes
# itself under `unshare -n`, or `unshare -rn` when not root): LNbits and Chromium try to
# reach the internet at start, and there nothing leaves the machine.
#
# Needs swaks, unshare and ip (util-linux, iproute2), chromium and chromium-driver
# (CHROMIUM, CHROMEDRIVER: default /usr/bin/chromium and /usr/bin/chromedriver), zbarimg
# (zbar-tools; without it the QR code is not read back, with a note), a Python
# (PYTHON, default python3) with tests/interop/requirements.txt (aiosmtpd, selenium), and
# LNbits 1.6.2 in a virtualenv: LNBITS_VENV, default
# ${LNMP_TEST_CACHE:-$HOME/.cache/lnmp-bridge}/lnbits-venv (scripts/test makes it:
# python3 -m venv DIR && DIR/bin/pip install 'lnbits==1.6.2' 'bitstring<5').
# Binaries: LNMP_BIN and DNS_STUB_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/
# lnmp-bridge and .../examples/dns_stub (cargo build --locked --bin lnmp-bridge
# --example dns_stub). Everything runs on loopback in a temporary folder, removed on exit
# (kept when KEEP_WORK=1). Screenshots go to LNMP_TEST_ARTIFACTS when set; otherwise
# they are in the work folder and, when that is removed, copied to
# target/interop-artifacts/payments/ in the checkout; the script prints where. Each
# check prints "ok - ..." or "not ok - ..." with what the peers said; the last line
# counts them, and the exit status is 1 if any failed. The whole run is bounded by
# PAYMENTS_TIMEOUT seconds (default 900).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"

cache="${LNMP_TEST_CACHE:-$HOME/.cache/lnmp-bridge}"
lnbits_venv="${LNBITS_VENV:-$cache/lnbits-venv}"
artifacts_env="${LNMP_TEST_ARTIFACTS:-}"
target="${CARGO_TARGET_DIR:-target}"
py="${PYTHON:-python3}"
chromium="${CHROMIUM:-/usr/bin/chromium}"
chromedriver="${CHROMEDRIVER:-/usr/bin/chromedriver}"

# --- what is needed, checked before anything starts -------------------------------------

if [ "${LNMP_PAYMENTS_NETNS:-}" != 1 ]; then
  for f in "${LNMP_BIN:-$target/debug/lnmp-bridge}" "${DNS_STUB_BIN:-$target/debug/examples/dns_stub}"; do
    [ -x "$f" ] || { echo "missing $f: cargo build --locked --bin lnmp-bridge --example dns_stub" >&2; exit 1; }
  done
  for tool in swaks unshare ip openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (Debian: swaks util-linux iproute2 openssl)" >&2; exit 1; }
  done
  for f in "$chromium" "$chromedriver"; do
    [ -x "$f" ] || { echo "missing $f (Debian: chromium chromium-driver; or set CHROMIUM and CHROMEDRIVER)" >&2; exit 1; }
  done
  "$py" -c 'import aiosmtpd, selenium' 2>/dev/null || {
    echo "$py lacks aiosmtpd or selenium: set PYTHON to a Python with tests/interop/requirements.txt" >&2
    exit 1
  }
  [ -x "$lnbits_venv/bin/lnbits" ] || {
    echo "no LNbits in $lnbits_venv: python3 -m venv $lnbits_venv && $lnbits_venv/bin/pip install 'lnbits==1.6.2' 'bitstring<5' (or set LNBITS_VENV)" >&2
    exit 1
  }
  # Into a network namespace of our own with only loopback; bounded as a whole.
  ns=(unshare -n)
  [ "$(id -u)" = 0 ] || ns=(unshare -rn)
  export LNMP_PAYMENTS_NETNS=1
  exec timeout -k 10 "${PAYMENTS_TIMEOUT:-900}" "${ns[@]}" -- bash "$root/tests/interop/payments_peers.sh" "$@"
fi
unset LNMP_PAYMENTS_NETNS
ip link set lo up

# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_bin=$(abs "${LNMP_BIN:-$target/debug/lnmp-bridge}")
dns_stub_bin=$(abs "${DNS_STUB_BIN:-$target/debug/examples/dns_stub}")
client_py="$root/tests/interop/payments_client.py"
sink_py="$root/tests/interop/outbound_sink.py"
case "$py" in */*) py=$(abs "$py") ;; esac

# Only what this script sets reaches the daemon: no config file, no inherited overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

long=$((${PAYMENTS_TIMEOUT:-900} + 30)) # the most any helper process may live
work=$(mktemp -d)
if [ -n "$artifacts_env" ]; then
  shots=$(abs "$artifacts_env")
else
  shots="$work/screenshots"
fi
mkdir -p "$shots"
dns_pid=""
daemon_pid=""
b_pid=""
sink_pid=""
lnbits_pgid=""
cleanup() {
  stop "$daemon_pid"
  stop "$b_pid"
  if [ -n "$lnbits_pgid" ]; then
    kill -TERM -- "-$lnbits_pgid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$lnbits_pgid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$lnbits_pgid" 2>/dev/null || true
  fi
  stop "$sink_pid"
  stop "$dns_pid"
  wait 2>/dev/null || true
  if [ -z "$artifacts_env" ] && [ "${KEEP_WORK:-0}" != 1 ] && compgen -G "$shots/*.png" >/dev/null; then
    local keep="$root/target/interop-artifacts/payments"
    mkdir -p "$keep" && cp "$shots"/*.png "$keep"/ && echo "# screenshots copied to $keep" >&2
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'echo "# interrupted (timeout?)" >&2; exit 143' TERM INT
cd "$work"
if [ -z "$artifacts_env" ] && [ "${KEEP_WORK:-0}" != 1 ]; then
  echo "# screenshots: taken in $shots, copied to $root/target/interop-artifacts/payments at the end"
else
  echo "# screenshots in $shots"
fi

# --- LNbits, started first (it takes a few seconds), for checks 5 and 6 ----------------

lnbits_port=$(free_port)
lnbits_url="http://127.0.0.1:$lnbits_port"
mkdir -p lnbits-data
lnbits_sp=$("$lnbits_venv/bin/python" -c 'import site; print(site.getsitepackages()[0])')
# From its site-packages folder (it serves lnbits/static relative to the cwd), in a
# process group of its own so that stopping it stops its workers too.
(
  cd "$lnbits_sp"
  export LNBITS_BACKEND_WALLET_CLASS=FakeWallet LNBITS_DATA_FOLDER="$work/lnbits-data" \
    HOST=127.0.0.1 PORT="$lnbits_port"
  exec setsid timeout "$long" "$lnbits_venv/bin/lnbits" --host 127.0.0.1 --port "$lnbits_port"
) >"$work/lnbits-server.log" 2>&1 &
lnbits_pgid=$!

# --- the strangers' MX: one aiosmtpd sink for every remote domain ----------------------

timeout "$long" "$py" "$sink_py" serve --dir "$work/mx-sink" >mx-sink.out 2>mx-sink.err &
sink_pid=$!
wait_for mx-sink.out '^sink listening on ' "$sink_pid"
sink_port=$(sed -n 's/^sink listening on 127\.0\.0\.1://p' mx-sink.out)

# --- the domain: quickstart (config, master key, DKIM keys, alice) ---------------------

http_port=$(free_port)
export LNMP__SERVER__DATA_DIR="$work/data"
export LNMP__SERVER__DOMAIN=bridge.test
export LNMP__SERVER__HOSTNAME=mx.bridge.test
# A real port: the pay links are https://mx.bridge.test:<this port>/pay/<token>.
export LNMP__HTTP__LISTEN="127.0.0.1:$http_port"
relay_port=$(free_port)
export LNMP__RELAY__LISTEN="127.0.0.1:$relay_port"
loopback_listeners
export LNMP__OUTBOUND__MX_PORT="$sink_port"
export LNMP__OUTBOUND__POLL_SECONDS=1
export LNMP__OUTBOUND__TIMEOUT_SECONDS=15

timeout 120 "$lnmp_bin" quickstart --dir "$work/quickstart" --domain bridge.test --admin alice \
  --hostname mx.bridge.test >quickstart.out 2>quickstart.err || {
  echo "quickstart failed:" >&2
  cat quickstart.out quickstart.err >&2
  exit 1
}
alice_pw=alice-password-1
printf '%s\n' "$alice_pw" | timeout 60 "$lnmp_bin" user passwd alice --password-stdin >/dev/null

# --- DNS: our domain, the strangers' domain (SPF passes from 127.0.0.1) and a forged one -

zone="$work/payments.zone"
{
  echo '# Written by tests/interop/payments_peers.sh for one run. Everything is on 127.0.0.1.'
  echo 'bridge.test            TXT   "v=spf1 ip4:127.0.0.1 -all"'
  echo '_dmarc.bridge.test     TXT   "v=DMARC1; p=reject"'
  echo 'bridge.test            MX    10 mx.bridge.test'
  echo 'mx.bridge.test         A     127.0.0.1'
  sed -n 's/^\([^ ]*\._domainkey\.bridge\.test\.\) *IN TXT *\(.*\)$/\1 TXT \2/p' quickstart.out
  echo 'stranger.test          TXT   "v=spf1 ip4:127.0.0.1 -all"'
  echo '_dmarc.stranger.test   TXT   "v=DMARC1; p=reject"'
  echo 'stranger.test          MX    10 mx.stranger.test'
  echo 'mx.stranger.test       A     127.0.0.1'
  # SPF allows only TEST-NET-1, so mail from 127.0.0.1 fails it; DMARC p=none, so it is
  # still taken. Its MX is the sink too: a request sent there would be seen.
  echo 'forged.test            TXT   "v=spf1 ip4:192.0.2.0/24 -all"'
  echo '_dmarc.forged.test     TXT   "v=DMARC1; p=none"'
  echo 'forged.test            MX    10 mx.forged.test'
  echo 'mx.forged.test         A     127.0.0.1'
} >"$zone"

timeout "$long" "$dns_stub_bin" --listen 127.0.0.1:0 --zone "$zone" >dns.out 2>dns.err &
dns_pid=$!
wait_for dns.out '^dns stub listening on ' "$dns_pid"
dns_addr=$(sed -n 's/^dns stub listening on //p' dns.out)
export LNMP__DNS__NAMESERVERS="[\"$dns_addr\"]"

# --- the daemon ------------------------------------------------------------------------

runs=0
# start_daemon: `lnmp-bridge serve` with what is exported now; output in daemon-N.out and
# daemon-N.err; sets mx and imap to its listeners' ports.
start_daemon() {
  runs=$((runs + 1))
  daemon_out="$work/daemon-$runs.out"
  daemon_err="$work/daemon-$runs.err"
  timeout "$long" "$lnmp_bin" serve >"$daemon_out" 2>"$daemon_err" &
  daemon_pid=$!
  wait_for "$daemon_out" '^Mail clients:' "$daemon_pid"
  port_of() { sed -n "s/^  $1 on 127\.0\.0\.1:\([0-9]*\)\$/\1/p" "$daemon_out"; }
  mx=$(port_of 'SMTP MX (STARTTLS)')
  imap=$(port_of 'IMAP (STARTTLS)')
  submission=$(port_of 'SMTP submission (STARTTLS, AUTH)')
  for p in "$mx" "$imap" "$submission" "$http_port"; do
    if [ -z "$p" ] || ! accepts "$p"; then
      echo "a listener is missing or closed:" >&2
      cat "$daemon_out" "$daemon_err" >&2
      exit 1
    fi
  done
  echo "# daemon run $runs ($*): MX $mx, IMAP $imap, HTTPS $http_port; DNS stub $dns_addr; MX sink $sink_port"
}
restart_daemon() {
  stop "$daemon_pid"
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=""
  start_daemon "$@"
}

# --- helpers ---------------------------------------------------------------------------

base="https://127.0.0.1:$http_port"
pay_url_re="https://mx\.bridge\.test:$http_port/pay/[a-z2-7]{16}"
mid() { printf '<%s.%s@%s>' "$1" "$$" "$2"; } # NAME DOMAIN: a Message-ID of this run

# eml FILE FROM MESSAGE-ID SUBJECT BODY-LINE: a message file for swaks --data.
eml() {
  {
    printf 'From: <%s>\r\nTo: Alice <alice@bridge.test>\r\nSubject: %s\r\n' "$2" "$4"
    printf 'Message-ID: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n' "$3" "$(date -R)"
    printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\nsecond line of the body\r\n' "$5"
  } >"$1"
}
# send FROM FILE: the stranger's server hands the file to the MX for alice.
send() { swaks_run --port "$mx" --from "$1" --to alice@bridge.test --data "@$2"; }
# token_of: the pay token in the MX's last answer (in $log, any host), empty if none.
token_of() {
  sed -n 's#^<[-~*]* .*/pay/\([a-z2-7]\{16\}\)\( .*\)\{0,1\}$#\1#p' "$log" | head -1
}
# lines_fit [LOG]: every server reply line, with its CRLF, is at most 512 octets.
lines_fit() {
  LC_ALL=C awk '/^<[-~*]+ / { sub(/^<[-~*]+ /, ""); if (length($0) + 2 > 512) { print "reply line of " length($0) + 2 " octets: " $0; bad = 1 } }
    END { exit bad }' "${1:-$log}" >"$work/lines.log"
}

# run_logged NAME CMD...: the command's output in $work/NAME.log ($log; the last run of
# NAME, each also added to $work/all.log), its exit status in $rc.
run_logged() {
  local name=$1
  shift
  log="$work/$name.log"
  { printf '$'; printf ' %q' "$@"; printf '\n'; } >"$log"
  rc=0
  timeout 120 "$@" >>"$log" 2>&1 || rc=$?
  echo "# exit status $rc" >>"$log"
  cat "$log" >>"$work/all.log"
}
client() { timeout 120 "$py" "$client_py" "$@"; }
# status TOKEN ARGS...: payments_client.py status; output in $log.
status() {
  local t=$1
  shift
  run_logged status "$py" "$client_py" status --base "$base" --token "$t" "$@"
  [ "$rc" = 0 ]
}
status_field() { # TOKEN FIELD
  client status --base "$base" --token "$1" --print "$2" 2>/dev/null || true
}
# imap_check WHAT MESSAGE-ID FOLDER ARGS...: payments_client.py imap-check for alice.
imap_check() {
  local what=$1 m=$2 folder=$3
  shift 3
  run_logged imap "$py" "$client_py" imap-check --port "$imap" --user alice --password "$alice_pw" \
    --folder "$folder" --message-id "$m" "$@"
  if [ "$rc" = 0 ]; then ok "$what"; else not_ok "$what" "$log" "$daemon_err"; fi
}
lnmp() { run_logged lnmp "$lnmp_bin" "$@"; [ "$rc" = 0 ]; }
is_contact() { # USER ADDRESS
  lnmp contacts list "$1" && awk -v a="$2" 'tolower($NF) == tolower(a) { f = 1 } END { exit !f }' "$log"
}
balance_is() { # USER TEXT: `wallet balance USER` prints "<email>: TEXT"
  lnmp wallet balance "$1" && grep -Eq ": $2\$" "$log"
}
# held STRANGER NAME: sends a new message from STRANGER and expects the retry-mode 450;
# sets msg_id, msg_file, token, bolt11.
held() {
  local from=$1 name=$2
  msg_id=$(mid "$name" "${from#*@}")
  msg_file="$work/$name.eml"
  eml "$msg_file" "$from" "$msg_id" "paywall $name $$" "hello alice, this is $from ($name body $$)"
  send "$from" "$msg_file"
  token=$(token_of)
  check "$name: $from's mail to alice answered 450 4.7.0, payment required: 100 sats, pay link $pay_url_re" "$log" "$daemon_err" -- \
    eval 'status_is 26 && replied "450-4\.7\.0 payment required: 100 sats to reach alice@bridge\.test; pay at $pay_url_re\$" && replied "450 4\.7\.0 "'
  bolt11=""
  [ -n "$token" ] && bolt11=$(status_field "$token" bolt11)
  echo "# $name: token ${token:-(none)}, bolt11 ${bolt11:0:40}..."
}
dev_pay() { lnmp dev pay "$1"; }

start_daemon "dev wallet, retry mode"

# --- 1. dev wallet, retry mode ---------------------------------------------------------

held dave@stranger.test retry
first_log=$log
check "retry: every line of the MX's replies is at most 512 octets (with CRLF)" "$work/lines.log" "$first_log" -- lines_fit "$first_log"
check "retry: GET /pay/<token>/status says held, 100 sats, for alice@bridge.test, a regtest BOLT11" "$work/status.log" "$daemon_err" -- \
  eval 'status "$token" --want-state held --expect amount_sats=100 --expect recipient=alice@bridge.test && [[ "$bolt11" == lnbcrt* ]]'
imap_check "retry: the message waits in alice's Requests folder (IMAP)" "$msg_id" Requests --count 1 --wait 10
imap_check "retry: and is not in her INBOX" "$msg_id" INBOX --count 0
check "retry: lnmp-bridge dev pay <bolt11> succeeds" "$work/lnmp.log" -- dev_pay "$bolt11"
# IMAP first: the daemon's own poll (lightning.poll_seconds, default 2) must deliver it;
# the status call would settle it too.
imap_check "retry: within 10 s the message is in INBOX, flagged \$Paid, with X-LNMP-Payment: 100 sat and X-Priority" \
  "$msg_id" INBOX --count 1 --wait 10 --flag '$Paid' --header 'X-LNMP-Payment=100 sat' --has-header X-Priority
check "retry: the status says delivered" "$work/status.log" "$daemon_err" -- \
  status "$token" --want-state delivered --wait 5
imap_check "retry: Requests no longer has it" "$msg_id" Requests --count 0
send dave@stranger.test "$msg_file"
check "retry: the sender's server sending the same message again gets 250" "$log" "$daemon_err" -- \
  eval 'status_is 0 && replied "250 "'
imap_check "retry: INBOX still has exactly one copy" "$msg_id" INBOX --count 1 --settle 3
check "retry: contacts list alice lists dave@stranger.test" "$work/lnmp.log" -- is_contact alice dave@stranger.test
check "retry: wallet balance alice shows 100 sats" "$work/lnmp.log" -- balance_is alice '100 sats'

# --- 2. Requests -> INBOX over IMAP: let in for free ------------------------------------

held hank@stranger.test move
imap_check "move: the message waits in Requests" "$msg_id" Requests --count 1 --wait 10
run_logged imap-move "$py" "$client_py" imap-move --port "$imap" --user alice --password "$alice_pw" \
  --folder Requests --to INBOX --message-id "$msg_id"
check "move: UID MOVE from Requests to INBOX succeeds" "$log" "$daemon_err" -- status_is 0
imap_check "move: the message is in INBOX once" "$msg_id" INBOX --count 1 --wait 5
check "move: contacts list alice lists hank@stranger.test" "$work/lnmp.log" "$daemon_err" -- \
  is_contact alice hank@stranger.test
check "move: the pay status says delivered (alice let it in)" "$work/status.log" "$daemon_err" -- \
  status "$token" --want-state delivered --wait 10
check "move: alice's balance is unchanged (100 sats): nothing was paid" "$work/lnmp.log" -- balance_is alice '100 sats'

# --- 3. the pay page in headless Chromium ----------------------------------------------

held erin@stranger.test page
n=$((n + 1))
log="$work/browser-$n.log"
rc=0
timeout 180 "$py" "$client_py" browser --url "https://mx.bridge.test:$http_port/pay/$token" \
  --host-map mx.bridge.test --amount 100 --recipient alice@bridge.test --bolt11 "${bolt11:-none}" \
  --shot-held "$shots/pay-page-held.png" --shot-delivered "$shots/pay-page-delivered.png" \
  --pay-command "$(printf '%q dev pay %q' "$lnmp_bin" "${bolt11:-none}")" --wait 20 \
  --chromium "$chromium" --chromedriver "$chromedriver" --driver-log "$work/chromedriver.log" >"$log" 2>&1 || rc=$?
grep -E '^# ' "$log" || true
mapfile -t lines <"$log"
for line in "${lines[@]}"; do
  case "$line" in
    "pass: "*) ok "page: ${line#pass: }" ;;
    "FAIL: "*) not_ok "page: ${line#FAIL: }" "$log" "$daemon_err" ;;
  esac
done
if [ "$rc" != 0 ] && ! grep -q '^FAIL: ' "$log"; then
  not_ok "page: the browser run exited with status $rc" "$log" "$work/chromedriver.log"
fi
imap_check "page: the paid message is in INBOX with \$Paid" "$msg_id" INBOX --count 1 --wait 10 --flag '$Paid'
echo "# screenshots: $shots/pay-page-held.png $shots/pay-page-delivered.png"

# --- 4. accept mode and the payment request email --------------------------------------

export LNMP__PAYWALL__MODE=accept
restart_daemon "dev wallet, accept mode"

gina_id=$(mid accept stranger.test)
marker="secret-words-$$"
eml "$work/accept.eml" gina@stranger.test "$gina_id" "subject-$marker" "the body says $marker"
send gina@stranger.test "$work/accept.eml"
token=$(token_of)
check "accept: gina@stranger.test (SPF pass, aligned) gets 250 with the pay link" "$log" "$daemon_err" -- \
  eval 'status_is 0 && replied "250[- ]2\.0\.0 payment required: 100 sats to reach alice@bridge\.test; pay at $pay_url_re\$"'
bolt11=""
[ -n "$token" ] && bolt11=$(status_field "$token" bolt11)
imap_check "accept: the message waits in alice's Requests folder" "$gina_id" Requests --count 1 --wait 10
pay_link="https://mx.bridge.test:$http_port/pay/${token:-none}"
run_logged request "$py" "$client_py" request-check --dir "$work/mx-sink" --rcpt gina@stranger.test \
  --count 1 --wait 30 --settle 1 --header 'Auto-Submitted=auto-replied' --contains '100 sats' \
  --line "lightning:${bolt11:-none}" --line "${bolt11:-none}" --contains "$pay_link" \
  --absent "$marker" --absent 'second line of the body' --show
check "accept: one payment request reaches gina's MX: null sender, Auto-Submitted: auto-replied, 100 sats, lightning: link, the BOLT11, the pay link, nothing of the original" \
  "$log" "$work/mx-sink.out" "$daemon_err" -- status_is 0

eml "$work/accept2.eml" gina@stranger.test "$(mid accept2 stranger.test)" "another one $$" "a second message from gina"
send gina@stranger.test "$work/accept2.eml"
check "accept: gina's second message gets 250 too" "$log" "$daemon_err" -- eval 'status_is 0 && replied "250[- ]"'
run_logged request "$py" "$client_py" request-check --dir "$work/mx-sink" --rcpt gina@stranger.test \
  --count 1 --settle 4
check "accept: and no second payment request within the window" "$log" "$work/mx-sink.out" -- status_is 0

mallory_id=$(mid forged forged.test)
eml "$work/forged.eml" mallory@forged.test "$mallory_id" "forged $$" "not really from forged.test"
send mallory@forged.test "$work/forged.eml"
check "accept: mallory@forged.test (SPF fails, no DKIM) gets 250" "$log" "$daemon_err" -- \
  eval 'status_is 0 && replied "250[- ]"'
run_logged request "$py" "$client_py" request-check --dir "$work/mx-sink" --rcpt mallory@forged.test \
  --count 0 --settle 4
check "accept: no payment request goes to the forged sender" "$log" "$work/mx-sink.out" -- status_is 0

# --- 5. LNbits -------------------------------------------------------------------------

lnbits_ready() {
  for _ in $(seq 1 300); do
    timeout 5 "$py" - "$lnbits_url" <<'PY' 2>/dev/null && return 0
import sys, urllib.request, urllib.error
try:
    urllib.request.urlopen(sys.argv[1] + "/api/v1/health", timeout=3)
except urllib.error.HTTPError:
    pass  # answers, if only with a redirect to the first install
PY
    kill -0 "$lnbits_pgid" 2>/dev/null || return 1
    sleep 0.2
  done
  return 1
}
lnbits_up=0
if ! lnbits_ready; then
  not_ok "lnbits: LNbits (FakeWallet) answers on $lnbits_url" "$work/lnbits-server.log"
else
  ok "lnbits: LNbits (FakeWallet) answers on $lnbits_url"
  run_logged lnbits "$py" "$client_py" lnbits-setup --url "$lnbits_url" --out "$work/lnbits-wallets.sh"
  if [ "$rc" != 0 ]; then
    not_ok "lnbits: super user claimed, wallet A (the bridge's) and wallet B (the payer's, funded) made" "$log" "$work/lnbits-server.log"
  else
    ok "lnbits: super user claimed, wallet A (the bridge's) and wallet B (the payer's, funded) made"
    lnbits_a_id="" lnbits_a_inkey="" lnbits_a_adminkey="" lnbits_b_adminkey=""
    # shellcheck disable=SC1091
    source "$work/lnbits-wallets.sh"
    export LNMP__PAYWALL__MODE=retry
    export LNMP__LIGHTNING__BACKEND=lnbits
    export LNMP__LIGHTNING__LNBITS_URL="$lnbits_url"
    export LNMP__LIGHTNING__LNBITS_INVOICE_KEY="$lnbits_a_inkey"
    export LNMP__LIGHTNING__LNBITS_ADMIN_KEY="$lnbits_a_adminkey"
    restart_daemon "LNbits, retry mode"
    a_before=$(client lnbits-balance --url "$lnbits_url" --key "$lnbits_a_inkey" || echo 0)
    held frank@stranger.test lnbits
    lnbits_up=1
  fi
fi
if [ "$lnbits_up" = 1 ] && [ -z "$token" ]; then
  not_ok "lnbits: the rest (pay from wallet B, delivered, wallet A's balance) needs a held message: skipped"
elif [ "$lnbits_up" = 1 ]; then
  check "lnbits: the status says held, 100 sats" "$work/status.log" "$daemon_err" -- \
    status "$token" --want-state held --expect amount_sats=100
  run_logged lnbits "$py" "$client_py" lnbits-invoice --url "$lnbits_url" --key "$lnbits_a_inkey" \
    --bolt11 "${bolt11:-none}" --amount-msat 100000 --wallet "$lnbits_a_id"
  check "lnbits: its BOLT11 is wallet A's invoice of 100 sats, pending (GET /api/v1/payments/<hash>)" "$log" -- status_is 0
  run_logged lnbits "$py" "$client_py" lnbits-pay --url "$lnbits_url" --key "$lnbits_b_adminkey" --bolt11 "${bolt11:-none}"
  check "lnbits: wallet B pays the BOLT11 (POST /api/v1/payments, out)" "$log" "$work/lnbits-server.log" -- status_is 0
  # IMAP first: the daemon must learn of the payment from LNbits by itself.
  imap_check "lnbits: within 15 s the message is in INBOX with \$Paid and X-LNMP-Payment: 100 sat" "$msg_id" INBOX \
    --count 1 --wait 15 --flag '$Paid' --header 'X-LNMP-Payment=100 sat'
  check "lnbits: the status says delivered" "$work/status.log" "$daemon_err" -- \
    status "$token" --want-state delivered --wait 5
  a_after=$(client lnbits-balance --url "$lnbits_url" --key "$lnbits_a_inkey" || echo 0)
  check "lnbits: wallet A's balance grew by 100 sats (from $a_before to $a_after msat)" "$daemon_err" -- \
    test "$((a_after - a_before))" = 100000
fi

# --- 6. auto-pay across two bridges ----------------------------------------------------

# Bridge B (other.test, carol) runs beside this one (bridge A) on its own data folder,
# HTTPS port and plain ws:// relay; its settings override A's exported ones.
b_out="$work/daemon-b.out"
b_err="$work/daemon-b.err"
b_imap=""
carol_pw=carol-password-1
confirm_subject="Confirm paying 100 sats to send your message"
# b_lnmp ARGS...: lnmp-bridge on bridge B; output in $work/lnmp-b.log ($log).
b_lnmp() { run_logged lnmp-b "${b_env[@]}" "$lnmp_bin" "$@"; [ "$rc" = 0 ]; }
# sats_of LOG: N of the last "<email>: N sats" line (`wallet balance`), empty if none.
sats_of() { sed -n 's/^[^ ]*: \(-\{0,1\}[0-9.]*\) sats$/\1/p' "$1" | tail -1; }
in_range() { # VALUE LOW HIGH (VALUE may have decimals)
  [ -n "$1" ] && awk -v v="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(v + 0 >= lo && v + 0 <= hi) }'
}
# check_balance WHAT USER LOW HIGH [b]: within 10 s `wallet balance USER` on A (or B)
# shows between LOW and HIGH sats; WHAT is printed with what it showed last.
check_balance() {
  local what=$1 user=$2 lo=$3 hi=$4 side=${5:-} i logf="$work/lnmp.log" err="$daemon_err"
  [ "$side" = b ] && logf="$work/lnmp-b.log" err="$b_err"
  got=""
  for i in $(seq 1 20); do
    if [ "$side" = b ]; then b_lnmp wallet balance "$user" || true; else lnmp wallet balance "$user" || true; fi
    got=$(sats_of "$logf")
    in_range "$got" "$lo" "$hi" && break
    [ "$i" = 20 ] || sleep 0.5
  done
  if in_range "$got" "$lo" "$hi"; then ok "$what (shows ${got} sats)"; else not_ok "$what (shows ${got:-nothing} sats)" "$logf" "$err"; fi
}
# answered: the status and the first words of the last payments_client.py http answer.
answered() { sed -n 's/^[A-Z]* [^ ]* -> \([0-9]*\): \(.\{0,70\}\).*$/\1 "\2..."/p' "$log" | head -1; }
lnbits_msat() { client lnbits-balance --url "$lnbits_url" --key "$1" 2>/dev/null || echo "?"; }
# check_lnbits WHAT INKEY MSAT: the LNbits wallet's balance is MSAT (within 10 s).
check_lnbits() {
  local i
  for i in $(seq 1 20); do
    got=$(lnbits_msat "$2")
    [ "$got" = "$3" ] && break
    [ "$i" = 20 ] || sleep 0.5
  done
  if [ "$got" = "$3" ]; then ok "$1 (now $got msat)"; else not_ok "$1 (now $got msat)" "$daemon_err" "$b_err"; fi
}
# b_imap_check WHAT ARGS...: payments_client.py imap-check for carol on bridge B.
b_imap_check() {
  local what=$1
  shift
  run_logged imap-b "$py" "$client_py" imap-check --port "${b_imap:-0}" --user carol \
    --password "$carol_pw" --folder INBOX "$@"
  if [ "$rc" = 0 ]; then ok "$what"; else not_ok "$what" "$log" "$daemon_err" "$b_err"; fi
}
# to_carol NAME SUBJECT: alice submits a message to carol's LNMP address (swaks, AUTH).
to_carol() {
  local file="$work/$1.eml"
  {
    printf 'From: Alice <alice@bridge.test>\r\nTo: <%s>\r\nSubject: %s\r\n' "$carol_addr" "$2"
    printf 'Message-ID: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\n' "$(mid "$1" bridge.test)" "$(date -R)"
    printf 'Content-Type: text/plain; charset=us-ascii\r\n\r\nhello carol, this is alice (%s)\r\n' "$1"
  } >"$file"
  swaks_run --port "$submission" --tls --auth PLAIN --auth-user alice --auth-password "$alice_pw" \
    --from alice@bridge.test --to "$carol_addr" --data "@$file"
  check "autopay: alice submits \"$2\" to $carol_addr (STARTTLS, AUTH PLAIN): 250" "$log" "$daemon_err" -- \
    eval 'status_is 0 && replied "250 "'
}

b_up=0
if [ "$lnbits_up" != 1 ]; then
  not_ok "autopay: needs LNbits and its funded payer wallet (check 5): skipped"
else
  : >"$work/lnbits-bridges.sh"
  run_logged lnbits "$py" "$client_py" lnbits-wallet --url "$lnbits_url" --name bridge-A \
    --prefix lnbits_ba --out "$work/lnbits-bridges.sh"
  # shellcheck disable=SC2034 # read by the eval below
  wallets_rc=$rc
  run_logged lnbits "$py" "$client_py" lnbits-wallet --url "$lnbits_url" --name bridge-B \
    --prefix lnbits_bb --out "$work/lnbits-bridges.sh"
  lnbits_ba_id="" lnbits_ba_inkey="" lnbits_ba_adminkey="" lnbits_bb_inkey="" lnbits_bb_adminkey=""
  # shellcheck disable=SC1091
  source "$work/lnbits-bridges.sh"
  check "autopay: two more LNbits wallets, bridge-A (this bridge's from now on) and bridge-B" "$log" -- \
    eval '[ "$wallets_rc" = 0 ] && [ "$rc" = 0 ] && [ -n "$lnbits_ba_adminkey" ] && [ -n "$lnbits_bb_adminkey" ]'

  # Bridge B: quickstart, carol's password, serve.
  b_http_port=$(free_port)
  b_relay_port=$(free_port)
  b_env=(env -u LNMP__RELAY_CLIENT__LOOKUP_BASE -u LNMP__RELAY_CLIENT__CA_FILE
    LNMP__SERVER__DATA_DIR="$work/data-b" LNMP__SERVER__DOMAIN=other.test
    LNMP__SERVER__HOSTNAME=mx.other.test LNMP__HTTP__LISTEN="127.0.0.1:$b_http_port"
    LNMP__RELAY__LISTEN="127.0.0.1:$b_relay_port" LNMP__RELAY__TLS=false
    LNMP__RELAY__PUBLIC_URL="ws://127.0.0.1:$b_relay_port" LNMP__PRICING__STRANGER=100
    LNMP__PAYWALL__MODE=retry LNMP__LIGHTNING__BACKEND=lnbits LNMP__LIGHTNING__LNBITS_URL="$lnbits_url"
    LNMP__LIGHTNING__LNBITS_INVOICE_KEY="$lnbits_bb_inkey"
    LNMP__LIGHTNING__LNBITS_ADMIN_KEY="$lnbits_bb_adminkey")
  run_logged quickstart-b "${b_env[@]}" "$lnmp_bin" quickstart --dir "$work/quickstart-b" \
    --domain other.test --admin carol --hostname mx.other.test
  qs_rc=$rc
  printf '%s\n' "$carol_pw" | timeout 60 "${b_env[@]}" "$lnmp_bin" user passwd carol --password-stdin \
    >>"$log" 2>&1 || qs_rc=1
  check "autopay: bridge B set up: quickstart --domain other.test --admin carol, carol's password set" "$log" -- \
    test "$qs_rc" = 0
  timeout "$long" "${b_env[@]}" "$lnmp_bin" serve >"$b_out" 2>"$b_err" &
  b_pid=$!
  if appears "$b_out" '^Mail clients:' "$b_pid" 60; then
    b_imap=$(sed -n 's/^  IMAP (STARTTLS) on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$b_out")
    echo "# bridge B: HTTPS $b_http_port, relay ws://127.0.0.1:$b_relay_port, IMAP ${b_imap:-?}"
    check "autopay: bridge B serves other.test on LNbits wallet bridge-B (HTTPS, ws:// relay and IMAP answer)" "$b_out" "$b_err" -- \
      eval '[ -n "$b_imap" ] && accepts "$b_imap" && accepts "$b_http_port" && accepts "$b_relay_port"'
    b_up=1
  else
    not_ok "autopay: bridge B serves other.test" "$b_out" "$b_err"
  fi
fi

carol_addr=""
if [ "$b_up" = 1 ]; then
  b_lnmp user list || true
  carol_addr=$(awk '$1 == "carol" { print $3 }' "$log")
  check "autopay: lnmp-bridge user list on B gives carol's LNMP address (${carol_addr:-none})" "$log" -- \
    eval '[[ "$carol_addr" =~ ^carol#[^@[:space:]]+@other\.test$ ]]'
  run_logged lookup-b "$py" "$client_py" http --url "https://127.0.0.1:$b_http_port/.well-known/lnmp.json?name=carol" \
    --want-status 200 --contains "ws://127.0.0.1:$b_relay_port"
  check "autopay: B's lookup document for carol names its relay ws://127.0.0.1:$b_relay_port" "$log" "$b_err" -- \
    status_is 0

  # Bridge A on its own LNbits wallet, looking addresses up at B, trusting B's certificate.
  export LNMP__LIGHTNING__LNBITS_INVOICE_KEY="$lnbits_ba_inkey"
  export LNMP__LIGHTNING__LNBITS_ADMIN_KEY="$lnbits_ba_adminkey"
  export LNMP__RELAY_CLIENT__LOOKUP_BASE="https://localhost:$b_http_port"
  export LNMP__RELAY_CLIENT__CA_FILE="$work/data-b/tls/cert.pem"
  restart_daemon "LNbits wallet bridge-A, addresses looked up at bridge B"

  # alice's balance topped up over LNbits. Checks 1-5 paid her already: what follows is
  # counted from what she has now.
  lnmp wallet balance alice || true
  start=$(sats_of "$log")
  echo "# autopay: alice's balance before the deposit: ${start:-unreadable} sats"
  [[ "$start" =~ ^[0-9]+$ ]] || start=0
  rc=0
  dep_bolt11=$(timeout 60 "$lnmp_bin" wallet deposit alice 1000 2>"$work/deposit.err" | head -1) || rc=$?
  { echo "\$ lnmp-bridge wallet deposit alice 1000 -> exit $rc: $dep_bolt11"; cat "$work/deposit.err"; } >"$work/deposit.log"
  run_logged lnbits "$py" "$client_py" lnbits-invoice --url "$lnbits_url" --key "$lnbits_ba_inkey" \
    --bolt11 "${dep_bolt11:-none}" --amount-msat 1000000 --wallet "$lnbits_ba_id"
  check "autopay: wallet deposit alice 1000 prints a BOLT11, wallet bridge-A's pending invoice of 1000 sats" \
    "$work/deposit.log" "$log" -- status_is 0
  run_logged lnbits "$py" "$client_py" lnbits-pay --url "$lnbits_url" --key "$lnbits_b_adminkey" \
    --bolt11 "${dep_bolt11:-none}"
  check "autopay: the payer's LNbits wallet pays it" "$log" "$work/lnbits-server.log" -- status_is 0
  check_balance "autopay: within 10 s wallet balance alice is 1000 sats up, $((start + 1000)) sats" \
    alice $((start + 1000)) $((start + 1000))
  check_lnbits "autopay: LNbits wallet bridge-A holds 1000 sats" "$lnbits_ba_inkey" 1000000

  # Within the default cap (1000 sats): paid without asking.
  to_carol autopay1 "autopay one $$"
  b_imap_check "autopay: within 20 s carol's INBOX on B has it, flagged \$Paid, with X-LNMP-Payment: 100 sat" \
    --subject "autopay one $$" --count 1 --wait 20 --flag '$Paid' --header 'X-LNMP-Payment=100 sat'
  # One LNbits pays another without a fee; max_fee_sats (10) is allowed if not.
  check_balance "autopay: alice's balance is 100 sats less, $((start + 900)) sats" \
    alice $((start + 890)) $((start + 900))
  check_balance "autopay: B's wallet balance carol is 100 sats" carol 100 100 b
  check_lnbits "autopay: LNbits wallet bridge-B grew by 100000 msat" "$lnbits_bb_inkey" 100000
  check_lnbits "autopay: LNbits wallet bridge-A paid 100 sats (no fee)" "$lnbits_ba_inkey" 900000
  run_logged imap "$py" "$client_py" imap-check --port "$imap" --user alice --password "$alice_pw" \
    --folder INBOX --subject "$confirm_subject" --count 0
  check "autopay: alice was not asked to confirm it" "$log" "$daemon_err" -- status_is 0

  # Above alice's cap: the message waits for her to confirm.
  lnmp pricing set alice --autopay-cap 50
  check "autopay: pricing set alice --autopay-cap 50" "$log" -- status_is 0
  to_carol autopay2 "autopay two $$"
  confirm_url=""
  run_logged confirm-mail "$py" "$client_py" imap-find --port "$imap" --user alice --password "$alice_pw" \
    --folder INBOX --subject "$confirm_subject" --pattern 'https://\S*/confirm/[a-z2-7]{16}' --wait 20
  [ "$rc" = 0 ] && confirm_url=$(grep -E '^https://' "$log" | tail -1)
  check "autopay: within 20 s alice's INBOX has \"$confirm_subject\" with the link https://mx.bridge.test:$http_port/confirm/<token> (${confirm_url:-none})" \
    "$log" "$daemon_err" "$b_err" -- eval '[[ "$confirm_url" =~ ^https://mx\.bridge\.test:$http_port/confirm/[a-z2-7]{16}$ ]]'
  b_imap_check "autopay: the second message has not reached carol" --subject "autopay two $$" --count 0 --settle 2
  check_balance "autopay: nothing was paid for it yet, alice still has $((start + 900)) sats" \
    alice $((start + 890)) $((start + 900))
  # The link's host is this machine: the same path on 127.0.0.1.
  confirm_local="$base/confirm/${confirm_url##*/confirm/}"
  [ -n "$confirm_url" ] || confirm_local="$base/confirm/none"
  run_logged confirm "$py" "$client_py" http --method GET --url "$confirm_local" --want-status 200 \
    --contains '100 sats' --contains alice
  check "autopay: GET of the link: 200, a page that asks alice to pay 100 sats (got $(answered))" "$log" "$daemon_err" -- status_is 0
  run_logged confirm "$py" "$client_py" http --method POST --url "$confirm_local" --want-status 200
  check "autopay: POST of the link: 200 (got $(answered))" "$log" "$daemon_err" "$b_err" -- status_is 0
  b_imap_check "autopay: within 20 s carol's INBOX has the second message, \$Paid, X-LNMP-Payment: 100 sat" \
    --subject "autopay two $$" --count 1 --wait 20 --flag '$Paid' --header 'X-LNMP-Payment=100 sat'
  check_balance "autopay: alice's balance is 100 sats less again, $((start + 800)) sats" \
    alice $((start + 780)) $((start + 800))
  paid_twice=$got
  run_logged confirm "$py" "$client_py" http --method POST --url "$confirm_local" --want-status 4xx
  check "autopay: a second POST of the link is refused, 4xx (got $(answered))" "$log" "$daemon_err" -- status_is 0
  sleep 2
  check_balance "autopay: and pays nothing: alice still has ${paid_twice:-?} sats" alice "${paid_twice:-0}" "${paid_twice:-0}"
  b_imap_check "autopay: carol has the second message once" --subject "autopay two $$" --count 1
  check_balance "autopay: B's wallet balance carol is 200 sats" carol 200 200 b
  check_lnbits "autopay: LNbits wallet bridge-B holds 200000 msat" "$lnbits_bb_inkey" 200000
fi

if kill -0 "$daemon_pid" 2>/dev/null; then
  ok "lnmp-bridge is still running after the suite"
else
  not_ok "lnmp-bridge is still running after the suite" "$daemon_err"
fi
if [ -n "$b_pid" ]; then
  if kill -0 "$b_pid" 2>/dev/null; then
    ok "bridge B is still running after the suite"
  else
    not_ok "bridge B is still running after the suite" "$b_err"
  fi
fi
for f in "$work"/daemon-*.err; do
  if grep -Eq ' (ERROR|WARN) ' "$f" 2>/dev/null; then
    echo "# $(basename "$f"): the daemon logged warnings or errors:"
    grep -E ' (ERROR|WARN) ' "$f" | head -20 | sed 's/^/#   /'
  fi
done

echo "payments_peers: $passed passed, $failed failed"
[ "$failed" = 0 ]
