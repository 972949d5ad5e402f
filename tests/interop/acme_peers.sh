#!/usr/bin/env bash
# ACME certificates against pebble, Let's Encrypt's test server (Debian package pebble),
# with real HTTP-01 checks: pebble-challtestsrv answers pebble's DNS queries for the
# daemon's host name with 127.0.0.1, and pebble's validator fetches the challenge from
# the daemon's plain-HTTP ACME listener (acme.http_listen).
#
#   tests/interop/acme_peers.sh
#
# 1. The daemon starts on its self-signed certificate, obtains one from pebble, and the
#    HTTPS front and the IMAP implicit-TLS listener then present it: issued by pebble's
#    CA for the host name (openssl s_client verifies the chain against pebble's root).
# 2. The files are in data/acme/<host name>/ (key mode 0600), the account in
#    data/acme/account.json (0600).
# 3. Renewal (renew_before_days longer than pebble's 5-year certificates, so every check
#    renews): the served certificate changes without a restart; an IMAP connection made
#    before the renewal still answers after it, and new connections get the new one.
# 4. pebble stopped: the failure is logged and retried with backoff, and the last
#    certificate still serves.
# 5. pebble started again (new CA, accounts forgotten): the daemon makes a new account
#    and obtains a certificate on its next retry.
# 6. TLS-ALPN-01: restarted for another name with no plain-HTTP listener, the daemon
#    obtains its certificate through pebble's TLS handshake to the HTTPS front.
#
# Needs pebble, pebble-challtestsrv, openssl and python3. The binary: LNMP_BIN, by
# default ${CARGO_TARGET_DIR:-target}/debug/lnmp-bridge (cargo build --locked --bin
# lnmp-bridge). Everything runs on loopback in a temporary folder, removed on exit (kept
# when KEEP_WORK=1). Each check prints "ok - ..." or "not ok - ..."; the last line counts
# them, and the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_binaries lnmp-bridge
need_tools "Debian: pebble openssl python3 curl" pebble pebble-challtestsrv openssl python3 curl

# Only what this script sets reaches the daemon: no config file, no inherited overrides.
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

work=$(mktemp -d)
pebble_pid=""
chall_pid=""
daemon_pid=""
cleanup() {
  stop "$daemon_pid"
  stop "$pebble_pid"
  stop "$chall_pid"
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
cd "$work"

host=mail.acme.test

# --- pebble, its DNS, and the TLS of its directory -------------------------------------

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dir-ca.key \
  -out dir-ca.pem -days 2 -subj /CN=acme-test-directory-ca >openssl.log 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout dir.key -out dir.csr \
  -subj /CN=127.0.0.1 >>openssl.log 2>&1
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n' >dir.ext
openssl x509 -req -in dir.csr -CA dir-ca.pem -CAkey dir-ca.key -CAcreateserial -days 2 \
  -extfile dir.ext -out dir.pem >>openssl.log 2>&1

acme_port=$(free_port)
# pebble's TLS-ALPN-01 checks go to this port: the daemon's HTTPS front.
https_port=$(free_port)
dns_port=$(free_port)
chall_mgmt_port=$(free_port)
dir_port=$(free_port)
mgmt_port=$(free_port)
cat >pebble.json <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$dir_port", "managementListenAddress": "127.0.0.1:$mgmt_port",
  "certificate": "$work/dir.pem", "privateKey": "$work/dir.key",
  "httpPort": $acme_port, "tlsPort": $https_port, "ocspResponderURL": "",
  "externalAccountBindingRequired": false}}
EOF

# Every A query is answered 127.0.0.1; no challenge servers of its own (the daemon's).
timeout 1800 pebble-challtestsrv -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
  -dns01 "127.0.0.1:$dns_port" -http01 "" -https01 "" -tlsalpn01 "" \
  -management "127.0.0.1:$chall_mgmt_port" >challtestsrv.log 2>&1 &
chall_pid=$!

start_pebble() {
  PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 PEBBLE_AUTHZREUSE=0 \
    timeout 1800 pebble -config pebble.json -dnsserver "127.0.0.1:$dns_port" >>pebble.log 2>&1 &
  pebble_pid=$!
  wait_for pebble.log 'Listening on: 127.0.0.1' "$pebble_pid"
}
# pebble_root: pebble's root CA into pebble-root.pem (10 s at most); fails without one.
pebble_root() {
  for _ in $(seq 1 50); do
    curl -s --cacert dir-ca.pem "https://127.0.0.1:$mgmt_port/roots/0" >pebble-root.pem 2>/dev/null &&
      grep -q 'BEGIN CERTIFICATE' pebble-root.pem && break
    sleep 0.2
  done
  grep -q 'BEGIN CERTIFICATE' pebble-root.pem
}
start_pebble
pebble_root || { echo "no root from pebble" >&2; cat pebble.log >&2; exit 1; }

# --- the daemon ------------------------------------------------------------------------

export LNMP__SERVER__DATA_DIR="$work/data"
export LNMP__SERVER__DOMAIN=acme.test
export LNMP__SERVER__HOSTNAME=$host
export LNMP__HTTP__LISTEN="127.0.0.1:$https_port"
relay_port=$(free_port)
export LNMP__RELAY__LISTEN="127.0.0.1:$relay_port"
export LNMP__SMTP__MX_LISTEN=
export LNMP__SMTP__SUBMISSION_LISTEN=
export LNMP__SMTP__SUBMISSIONS_LISTEN=
export LNMP__IMAP__LISTEN=
export LNMP__IMAP__TLS_LISTEN=127.0.0.1:0
export LNMP__LIMITS__SHUTDOWN_GRACE_SECONDS=2
export LNMP__ACME__ENABLED=true
export LNMP__ACME__DIRECTORY_URL="https://127.0.0.1:$dir_port/dir"
export LNMP__ACME__CA_FILE="$work/dir-ca.pem"
export LNMP__ACME__CONTACT="mailto:admin@acme.test"
export LNMP__ACME__HTTP_LISTEN="127.0.0.1:$acme_port"
# pebble's certificates last 5 years: renewing 10 years ahead renews at every check.
export LNMP__ACME__RENEW_BEFORE_DAYS=3650
export LNMP__ACME__CHECK_INTERVAL_SECONDS=20
export LNMP__ACME__RETRY_BASE_SECONDS=1
export LNMP__ACME__RETRY_MAX_SECONDS=4

runs=0
start_daemon() {
  runs=$((runs + 1))
  daemon_out="$work/daemon-$runs.out"
  daemon_err="$work/daemon-$runs.err"
  timeout 1800 "$lnmp_bin" serve >"$daemon_out" 2>"$daemon_err" &
  daemon_pid=$!
  wait_for "$daemon_out" '^Mail clients:' "$daemon_pid"
  imaps_port=$(sed -n 's/^  IMAP (implicit TLS) on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$daemon_out")
  if [ -z "$imaps_port" ] || ! accepts "$https_port"; then
    echo "listeners not found" >&2
    cat "$daemon_out" "$daemon_err" >&2
    exit 1
  fi
}
start_daemon
echo "# daemon: HTTPS $https_port, IMAPS $imaps_port, ACME HTTP $acme_port; pebble $dir_port"

issued() { grep -c 'ACME: new certificate in service' "$daemon_err" 2>/dev/null || true; }
# served PORT: the PEM of the certificate served there, verified against pebble's root.
served() {
  timeout 10 openssl s_client -connect "127.0.0.1:$1" -servername "${2:-$host}" -CAfile pebble-root.pem \
    -verify_hostname "${2:-$host}" -verify_return_error </dev/null 2>"s_client-$1.err" |
    openssl x509 2>/dev/null
}
fingerprint() { openssl x509 -noout -fingerprint -sha256 2>/dev/null; }

# --- 1. the first certificate ----------------------------------------------------------

if appears "$daemon_err" 'ACME: new certificate in service' "$daemon_pid" 60; then
  ok "the daemon obtained a certificate from pebble (HTTP-01 checked by pebble's validator)"
else
  not_ok "the daemon obtained a certificate from pebble" "$daemon_err" pebble.log
fi
if grep -q "Attempting to validate w/ HTTP: http://$host:$acme_port/.well-known/acme-challenge/" pebble.log &&
  grep -q 'set VALID by completed challenge' pebble.log; then
  ok "pebble validated over HTTP-01 against the daemon's listener"
else
  not_ok "pebble validated over HTTP-01 against the daemon's listener" pebble.log
fi
first=$(served "$https_port" | fingerprint)
if [ -n "$first" ]; then
  ok "the HTTPS front presents a certificate for $host that verifies against pebble's root"
else
  not_ok "the HTTPS front presents a pebble certificate for $host" "s_client-$https_port.err" "$daemon_err"
fi
if [ -n "$first" ] && [ "$(served "$imaps_port" | fingerprint)" = "$first" ]; then
  ok "the IMAP implicit-TLS listener presents the same certificate"
else
  not_ok "the IMAP implicit-TLS listener presents the same certificate" "s_client-$imaps_port.err"
fi
issuer=$(served "$https_port" | openssl x509 -noout -issuer 2>/dev/null || true)
case "$issuer" in
  *Pebble*) ok "issued by pebble's CA ($issuer)" ;;
  *) not_ok "issued by pebble's CA (got: $issuer)" ;;
esac

# --- 2. the files ----------------------------------------------------------------------

mode() { stat -c %a "$1" 2>/dev/null || echo missing; }
acme_dir="$work/data/acme"
check "the chain is kept in data/acme/$host/fullchain.pem" -- \
  grep -q 'BEGIN CERTIFICATE' "$acme_dir/$host/fullchain.pem"
check "the key is kept in data/acme/$host/key.pem with mode 0600" -- \
  [ "$(mode "$acme_dir/$host/key.pem")" = 600 ]
check "the account is kept in data/acme/account.json with mode 0600" -- \
  [ "$(mode "$acme_dir/account.json")" = 600 ]
kept=$(fingerprint <"$acme_dir/$host/fullchain.pem")
check "the kept certificate is the one served" -- [ "$kept" = "$first" ]

# --- 3. renewal without a restart ------------------------------------------------------

# An IMAP session opened now, on the first certificate, used again after the renewal.
cat >old_session.py <<'PY'
import os, socket, ssl, sys, time
port, ca, host, go, done = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=ca)
with socket.create_connection(("127.0.0.1", port), timeout=60) as raw:
    with ctx.wrap_socket(raw, server_hostname=host) as s:
        f = s.makefile("rb")
        print("greeting", f.readline().decode().strip(), flush=True)
        for _ in range(900):
            if os.path.exists(go):
                break
            time.sleep(0.1)
        s.sendall(b"a1 NOOP\r\n")
        while True:
            line = f.readline().decode()
            if not line or line.startswith("a1 "):
                print("reply", line.strip(), flush=True)
                break
open(done, "w").close()
PY
timeout 120 python3 old_session.py "$imaps_port" pebble-root.pem "$host" "$work/go" "$work/done" \
  >old_session.out 2>&1 &
old_pid=$!
appears old_session.out '^greeting \* OK' "$old_pid" 20 || true

renewed=0
for _ in $(seq 1 600); do
  [ "$(issued)" -ge 2 ] && { renewed=1; break; }
  kill -0 "$daemon_pid" 2>/dev/null || break
  sleep 0.1
done
if [ "$renewed" = 1 ]; then
  ok "the certificate was renewed by the running daemon (check_interval_seconds = 20)"
else
  not_ok "the certificate was renewed by the running daemon" "$daemon_err"
fi
second=$(served "$https_port" | fingerprint)
if [ -n "$second" ] && [ "$second" != "$first" ]; then
  ok "new HTTPS connections get the new certificate, without a restart"
else
  not_ok "new HTTPS connections get the new certificate (first $first, now $second)" "$daemon_err"
fi
check "new IMAP connections get the new certificate" -- \
  [ "$(served "$imaps_port" | fingerprint)" = "$second" ]
touch "$work/go"
wait "$old_pid" 2>/dev/null || true
if grep -q '^reply a1 OK' old_session.out; then
  ok "an IMAP connection made before the renewal still answers after it"
else
  not_ok "an IMAP connection made before the renewal still answers after it" old_session.out
fi
pid_before=$(pgrep -P "$daemon_pid" | head -1 || true)

# --- 4. the ACME server down -----------------------------------------------------------

stop "$pebble_pid"
pebble_pid=""
wait_failures() {
  for _ in $(seq 1 600); do
    [ "$(grep -c 'ACME: could not obtain a certificate' "$daemon_err" || true)" -ge "$1" ] && return 0
    sleep 0.1
  done
  return 1
}
if wait_failures 3; then
  ok "with pebble down, the failure is logged and retried"
else
  not_ok "with pebble down, the failure is logged and retried" "$daemon_err"
fi
if grep 'ACME: could not obtain a certificate' "$daemon_err" | grep -q 'retry_in_seconds=4'; then
  ok "retries back off up to retry_max_seconds"
else
  not_ok "retries back off up to retry_max_seconds" "$daemon_err"
fi
check "the last certificate still serves on HTTPS" -- \
  [ "$(served "$https_port" | fingerprint)" = "$second" ]
check "and on IMAP" -- [ "$(served "$imaps_port" | fingerprint)" = "$second" ]
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
check "the daemon was never restarted" "$daemon_err" -- alive "$pid_before"


# --- 5. the ACME server back -----------------------------------------------------------

# A new pebble: a new root, and it knows no account, so the daemon makes a new one.
before=$(issued)
mv pebble-root.pem pebble-root-1.pem
start_pebble
pebble_root || true
back=0
for _ in $(seq 1 300); do
  [ "$(issued)" -gt "$before" ] && { back=1; break; }
  sleep 0.1
done
if [ "$back" = 1 ] && [ -n "$(served "$https_port" | fingerprint)" ]; then
  ok "with pebble back (a new CA that knows no account), the next retry obtains a certificate and it serves"
else
  not_ok "with pebble back, the next retry obtains a certificate" "$daemon_err" pebble.log
fi


# --- 6. TLS-ALPN-01 --------------------------------------------------------------------

# A new name, no plain-HTTP listener: pebble can only check over TLS-ALPN-01, with a
# handshake to the daemon's HTTPS front (pebble's tlsPort).
stop "$daemon_pid"
daemon_pid=""
alpn_host=alpn.acme.test
export LNMP__ACME__CHALLENGE=tls-alpn-01
export LNMP__ACME__HTTP_LISTEN=
export LNMP__ACME__HOSTNAMES="[\"$alpn_host\"]"
export LNMP__ACME__RENEW_BEFORE_DAYS=30
validated=$(grep -c 'set VALID by completed challenge' pebble.log || true)
start_daemon
if appears "$daemon_err" 'ACME: new certificate in service' "$daemon_pid" 60; then
  ok "with challenge = \"tls-alpn-01\" and no HTTP listener, the daemon obtained a certificate"
else
  not_ok "with challenge = \"tls-alpn-01\", the daemon obtained a certificate" "$daemon_err" pebble.log
fi
check "pebble validated it over TLS-ALPN-01 (a challenge completed, nothing fetched over HTTP)" pebble.log -- \
  [ "$(grep -c 'set VALID by completed challenge' pebble.log || true)" -gt "$validated" ]
alpn_cert=$(served "$https_port" "$alpn_host" | openssl x509 -noout -ext subjectAltName 2>/dev/null || true)
case "$alpn_cert" in
  *"DNS:$alpn_host"*) ok "the HTTPS front serves the certificate for $alpn_host" ;;
  *) not_ok "the HTTPS front serves the certificate for $alpn_host" "s_client-$https_port.err" "$daemon_err" ;;
esac
check "it is kept in data/acme/$alpn_host/ (key 0600)" -- \
  [ "$(mode "$acme_dir/$alpn_host/key.pem")" = 600 ]

echo "# $passed passed, $failed failed"
[ "$failed" = 0 ]
