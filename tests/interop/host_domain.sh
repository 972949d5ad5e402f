#!/usr/bin/env bash
# README.md's "Host your domain" walk-through, followed step by step on loopback.
#
# The commands are read from the README, between <!-- host-your-domain:begin --> and
# <!-- host-your-domain:end --> (every line of its ```sh blocks). The script names each
# one exactly, in order, and either runs it with the machine's paths moved into a
# temporary folder (/var/lib/lnmp-bridge, /usr/local/bin, /etc/systemd/system; the
# built binary for target/release; no runuser or file owner, since the test runs as
# root) or says why it is not run here and what stands in for it. A README command the
# script does not name, or one it names that the README no longer has, is a failure:
# the two cannot drift apart silently.
#
# It all runs in a network and mount namespace of its own (unshare), so the daemon gets
# the standard ports quickstart configures, and /etc/hosts (bind-mounted there only)
# points example.com, mail.example.com and autoconfig.example.com at 127.0.0.1. Then:
# quickstart; the systemd unit's ExecStart; the ports the README opens accept; doctor
# runs; the autoconfig document is fetched over HTTPS from both of Thunderbird's URLs
# and parsed; a client (Python's imaplib and smtplib) logs in with exactly the settings
# it gives (host, port, socket type, %EMAILADDRESS%) and the password quickstart
# printed, on the preferred servers and the STARTTLS alternatives, verifying the
# daemon's certificate for the served host name; it sends itself a message and sees it
# arrive over IMAP; and the README's curl command sends one that arrives too.
#
# Needs root (unshare, mount), curl, python3. The binary: LNMP_BIN, by default
# ${CARGO_TARGET_DIR:-target}/debug/lnmp-bridge. Everything happens in a temporary
# folder, removed on exit (kept with KEEP_WORK=1). Each check prints "ok - ..." or
# "not ok - ..."; the last line counts them, and the exit status is 1 if any failed.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"

if [ -z "${HOST_DOMAIN_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "host_domain.sh needs root (a network and mount namespace of its own)" >&2; exit 1; }
  exec env HOST_DOMAIN_NETNS=1 timeout 900 unshare --net --mount --propagation private \
    "$root/tests/interop/host_domain.sh" "$@"
fi

# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"
lnmp_binaries lnmp-bridge
py="${PYTHON:-python3}"
need_tools "" curl python3 ip mount
while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' || true)

work=$(mktemp -d)
daemon_pid=""
cleanup() {
  stop "$daemon_pid"
  wait 2>/dev/null || true
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

ip link set lo up
printf '127.0.0.1 localhost example.com mail.example.com autoconfig.example.com\n::1 localhost\n' >"$work/hosts"
mount --bind "$work/hosts" /etc/hosts
mkdir -p "$work/usr/local/bin" "$work/var/lib" "$work/etc/systemd/system"
cd "$work"

# --- the README's commands -------------------------------------------------------------

"$py" - "$root/README.md" >readme.cmds <<'EOF'
import sys
text = open(sys.argv[1]).read()
begin, end = "<!-- host-your-domain:begin -->", "<!-- host-your-domain:end -->"
assert text.count(begin) == 1 and text.count(end) == 1, "one pair of markers"
section = text[text.index(begin):text.index(end)]
inside, cur = False, ""
for line in section.splitlines():
    if line.startswith("```"):
        inside = line.strip() == "```sh" if not inside else False
        continue
    if not inside:
        continue
    if line.endswith("\\"):
        cur += line[:-1].rstrip() + " "
        continue
    line, cur = (cur + line.strip()).strip(), ""
    if line and not line.startswith("#"):
        print(line)
EOF
[ -s readme.cmds ] || { echo "no commands between the host-your-domain markers of README.md" >&2; exit 1; }

followed=()
password="<password>" # until quickstart prints it
steps=0
# to_here COMMAND: the README command with this machine's paths moved into $work.
to_here() {
  local c=$1
  c=${c//"runuser -u lnmp-bridge -- "/}
  c=${c//" -o lnmp-bridge -g lnmp-bridge"/}
  c=${c//"target/release/lnmp-bridge"/$(printf '%q' "$lnmp_bin")}
  c=${c//"/usr/local/bin/"/$work/usr/local/bin/}
  c=${c//"/var/lib/lnmp-bridge"/$work/var/lib/lnmp-bridge}
  c=${c//"/etc/systemd/system/"/$work/etc/systemd/system/}
  c=${c//"deploy/"/$root/deploy/}
  c=${c//"<password>"/$password}
  case "$c" in lnmp-bridge\ *) c="$work/usr/local/bin/$c" ;; esac
  printf '%s\n' "$c"
}
# run_step COMMAND: runs the README command (moved here); its output in step-N.log.
run_step() {
  followed+=("$1")
  steps=$((steps + 1))
  step_log="$work/step-$steps.log"
  local here rc=0
  here=$(to_here "$1")
  printf '$ %s\n' "$here" >"$step_log"
  timeout 120 bash -c "$here" >>"$step_log" 2>&1 || rc=$?
  if [ "$rc" = 0 ]; then ok "README: $1"; else not_ok "README: $1 (exit status $rc)" "$step_log"; fi
}
# skip_step COMMAND REASON: named, not run here, and why.
skip_step() {
  followed+=("$1")
  printf '# README, not run here: %s\n#   (%s)\n' "$1" "$2"
}
# follow_step COMMAND: named; the lines after it do what it does.
follow_step() {
  followed+=("$1")
  printf '# README: %s\n' "$1"
}

# --- 1. build and install --------------------------------------------------------------

skip_step 'cargo build --release --locked' "the test uses the binary built already: $lnmp_bin"
run_step 'install -m 0755 target/release/lnmp-bridge /usr/local/bin/lnmp-bridge'
skip_step 'useradd --system --user-group --home-dir /var/lib/lnmp-bridge --shell /usr/sbin/nologin lnmp-bridge' \
  "it would add a user to this machine; the test runs as root, and deploy_checks.sh runs the image as an unprivileged user"
run_step 'install -d -m 0700 -o lnmp-bridge -g lnmp-bridge /var/lib/lnmp-bridge'

# --- 2. quickstart ---------------------------------------------------------------------

run_step 'runuser -u lnmp-bridge -- lnmp-bridge quickstart --dir /var/lib/lnmp-bridge --domain example.com --admin alice'
cp "$step_log" quickstart.out
email=$(sed -n 's/^  email address  *\([^ ]*\).*/\1/p' quickstart.out)
password=$(sed -n 's/^  password  *\([^ ]*\) .*/\1/p' quickstart.out)
if [ -z "$email" ] || [ -z "$password" ]; then
  echo "quickstart printed no email address or password:" >&2
  cat quickstart.out >&2
  exit 1
fi
check "quickstart printed alice's email address ($email) and a password" quickstart.out -- \
  test "$email" = alice@example.com
data="$work/var/lib/lnmp-bridge/data"

# --- 3. the DNS records ----------------------------------------------------------------
# (Published at a DNS host: nothing to run. The unit test
# http::autoconfig::tests::quickstart_records_agree_with_what_is_served compares them
# with the served document; here, that they are printed.)
for r in 'example.com\. +IN MX +10 mail\.example\.com\.' 'autoconfig\.example\.com\. +IN CNAME +mail\.example\.com\.' \
  '_imaps\._tcp\.example\.com\. +IN SRV +0 1 993 mail\.example\.com\.' \
  '_submissions\._tcp\.example\.com\. +IN SRV +0 1 465 mail\.example\.com\.'; do
  check "quickstart printed the record /$r/" quickstart.out -- grep -Eq "^$r\$" quickstart.out
done

# --- 4. start the daemon ---------------------------------------------------------------

run_step 'install -m 0644 deploy/lnmp-bridge.service /etc/systemd/system/lnmp-bridge.service'
unit="$work/etc/systemd/system/lnmp-bridge.service"
skip_step 'systemctl daemon-reload' "no systemd here: the unit's ExecStart is run directly, next"
follow_step 'systemctl enable --now lnmp-bridge'
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
workdir=$(sed -n 's/^WorkingDirectory=//p' "$unit")
(cd "$(to_here "$workdir")" && exec timeout 600 bash -c "exec $(to_here "$exec_start")") >daemon.out 2>daemon.err &
daemon_pid=$!
wait_for daemon.out '^Mail clients:' "$daemon_pid"
ok "the unit's ExecStart ($exec_start) serves"
# shellcheck disable=SC2016 # the README's command, literally
skip_step 'export POSTGRES_PASSWORD=$(openssl rand -hex 16)' "Docker Compose: no Docker engine here; deploy_checks.sh checks compose.yaml and runs the image's command line"
skip_step 'docker compose -f deploy/compose.yaml run --rm lnmp-bridge quickstart --dir /var/lib/lnmp-bridge --domain example.com --admin alice' \
  "no Docker engine here; deploy_checks.sh"
skip_step 'docker compose -f deploy/compose.yaml up -d' "no Docker engine here; deploy_checks.sh"

# --- 5. the ports ----------------------------------------------------------------------

ufw='ufw allow 25,465,587,993,143,443,7138/tcp'
skip_step "$ufw" "no firewall in this namespace; each port it opens is checked to accept instead"
ports=$(grep -E '^ufw allow ' readme.cmds | sed -n 's#^ufw allow \([0-9,]*\)/tcp$#\1#p' | tr ',' ' ')
for p in $ports; do
  check "port $p, opened by the README, accepts" daemon.out daemon.err -- accepts "$p"
done

# --- 6. doctor -------------------------------------------------------------------------
# On loopback no DNS record is published and the certificate is self-signed: doctor has
# failures to name. It must run to its end and name them, not crash or hang.

run_doctor='lnmp-bridge doctor --config /var/lib/lnmp-bridge/lnmp-bridge.toml'
followed+=("$run_doctor")
rc=0
timeout 120 bash -c "$(to_here "$run_doctor")" >doctor.out 2>&1 || rc=$?
check "README: $run_doctor (ran to its end, exit status $rc, naming what to fix)" doctor.out -- \
  bash -c "[ $rc != 124 ] && [ $rc -lt 100 ] && grep -Eqi 'dns|mx' doctor.out && grep -Eqi 'imap' doctor.out"
# What doctor can see on loopback is in order: no failure but the unpublished DNS records.
check "doctor finds nothing to fix but the DNS records (listeners, database, master key fine)" doctor.out -- \
  bash -c "! grep -E '^FAIL' doctor.out | grep -vEq '^FAIL +dns '"

# --- 7. Thunderbird: autoconfig, then log in with what it says -------------------------

q='emailaddress=alice%40example.com'
fetch() { # name url curl-options...: the document in NAME.xml, headers in NAME.headers
  local name=$1 url=$2
  shift 2
  curl -fsS --max-time 20 "$@" -D "$name.headers" -o "$name.xml" "$url" 2>"$name.err"
}
# The self-signed certificate names mail.example.com and example.com (not the
# autoconfig host): the .well-known URL is checked against it, the other taken as is.
check "autoconfig over HTTPS at https://example.com/.well-known/autoconfig/mail/config-v1.1.xml (certificate verified)" \
  wk.err daemon.err -- fetch wk "https://example.com/.well-known/autoconfig/mail/config-v1.1.xml?$q" --cacert "$data/tls/cert.pem"
check "autoconfig over HTTPS at https://autoconfig.example.com/mail/config-v1.1.xml" ac.err daemon.err -- \
  fetch ac "https://autoconfig.example.com/mail/config-v1.1.xml?$q" -k
check "both URLs serve the same document, as application/xml" wk.xml ac.xml wk.headers -- \
  bash -c "cmp -s wk.xml ac.xml && grep -qi '^content-type: application/xml' wk.headers"

rc=0
timeout 180 "$py" - wk.xml "$email" "$password" "$data/tls/cert.pem" >client.log 2>&1 <<'EOF' || rc=$?
# A mail client set up from config-v1.1.xml alone, as Thunderbird is.
import imaplib, smtplib, ssl, sys, time, uuid
import xml.etree.ElementTree as ET
doc, email, password, cafile = sys.argv[1:5]

def say(good, what):
    print(("ok - " if good else "not ok - ") + what, flush=True)
    return good

p = ET.parse(doc).getroot().find("emailProvider")
say(p is not None and p.findtext("domain") == email.split("@")[1], "autoconfig: the provider is the address's domain")
def servers(tag):
    return [{k: s.findtext(k) for k in ("hostname", "port", "socketType", "username", "authentication")}
            | {"type": s.get("type")} for s in p.findall(tag)]
imap, smtp = servers("incomingServer"), servers("outgoingServer")
say([(s["type"], s["socketType"]) for s in imap] == [("imap", "SSL"), ("imap", "STARTTLS")],
    "autoconfig: IMAP over SSL first, STARTTLS as the alternative")
say([(s["type"], s["socketType"]) for s in smtp] == [("smtp", "SSL"), ("smtp", "STARTTLS")],
    "autoconfig: SMTP submission over SSL first, STARTTLS as the alternative")
say(all(s["authentication"] == "password-cleartext" and s["username"] == "%EMAILADDRESS%" for s in imap + smtp),
    "autoconfig: password-cleartext with %EMAILADDRESS% everywhere")
say([int(s["port"]) for s in imap + smtp] == [993, 143, 465, 587],
    "autoconfig: the standard ports quickstart configured (993, 143, 465, 587)")

# The certificate must match the served host name: verified as a client with the
# certificate trusted would.
ctx = ssl.create_default_context(cafile=cafile)
user = lambda s: s["username"].replace("%EMAILADDRESS%", email)

def imap_login(s):
    if s["socketType"] == "SSL":
        c = imaplib.IMAP4_SSL(s["hostname"], int(s["port"]), ssl_context=ctx, timeout=20)
    else:
        c = imaplib.IMAP4(s["hostname"], int(s["port"]), timeout=20)
        c.starttls(ssl_context=ctx)
    c.login(user(s), password)
    return c

def smtp_send(s, subject):
    if s["socketType"] == "SSL":
        c = smtplib.SMTP_SSL(s["hostname"], int(s["port"]), context=ctx, timeout=20)
    else:
        c = smtplib.SMTP(s["hostname"], int(s["port"]), timeout=20)
        c.starttls(context=ctx)
    c.login(user(s), password)
    msg = f"From: {email}\r\nTo: {email}\r\nSubject: {subject}\r\nMessage-ID: <{uuid.uuid4()}@test>\r\n\r\nHello from autoconfig.\r\n"
    c.sendmail(email, [email], msg)
    c.quit()

def arrives(c, subject, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline:
        c.select("INBOX")
        typ, data = c.search(None, "SUBJECT", f'"{subject}"')
        if typ == "OK" and data[0].split():
            return True
        time.sleep(0.5)
    return False

for s in imap:
    try:
        c = imap_login(s)
        say(True, f"IMAP login as {user(s)} at {s['hostname']}:{s['port']} ({s['socketType']}), certificate verified")
        c.logout()
    except Exception as e:
        say(False, f"IMAP login at {s['hostname']}:{s['port']} ({s['socketType']}): {e!r}")
reader = imap_login(imap[0])
for s in smtp:
    subject = f"autoconfig {s['socketType']} {uuid.uuid4().hex[:8]}"
    try:
        smtp_send(s, subject)
        say(True, f"SMTP submission as {user(s)} at {s['hostname']}:{s['port']} ({s['socketType']}) to self")
        say(arrives(reader, subject), f"the message sent over {s['socketType']} arrives in INBOX over IMAP")
    except Exception as e:
        say(False, f"SMTP submission at {s['hostname']}:{s['port']} ({s['socketType']}): {e!r}")
reader.logout()
EOF
grep -E '^(not )?ok - ' client.log || true
passed=$((passed + $(grep -c '^ok - ' client.log || true)))
failed=$((failed + $(grep -c '^not ok - ' client.log || true)))
if [ "$rc" != 0 ] || ! grep -q '^ok - ' client.log; then
  not_ok "the mail client ran to its end (exit status $rc)" client.log daemon.err
fi

# --- 8. the README's test message ------------------------------------------------------

send=$(grep -E '^printf .*\| curl ' readme.cmds || true)
if [ -n "$send" ]; then
  run_step "$send"
  subject=$(printf '%s\n' "$send" | sed -n 's/.*Subject: \([^\\]*\)\\r.*/\1/p')
  rc=0
  timeout 60 "$py" - "$email" "$password" "$data/tls/cert.pem" "$subject" >arrival.log 2>&1 <<'EOF' || rc=$?
import imaplib, ssl, sys, time
email, password, cafile, subject = sys.argv[1:5]
c = imaplib.IMAP4_SSL("mail.example.com", 993, ssl_context=ssl.create_default_context(cafile=cafile), timeout=20)
c.login(email, password)
for _ in range(60):
    c.select("INBOX")
    typ, data = c.search(None, "SUBJECT", f'"{subject}"')
    if typ == "OK" and data[0].split():
        print("arrived")
        break
    time.sleep(0.5)
c.logout()
EOF
  check "the README's test message (\"$subject\") arrives in alice's INBOX" arrival.log daemon.err -- grep -qx arrived arrival.log
else
  not_ok "the README's section has a command sending a test message (printf ... | curl ...)"
fi

# --- the README and this script agree --------------------------------------------------

printf '%s\n' "${followed[@]}" >followed.cmds
if diff -u readme.cmds followed.cmds >sync.diff; then
  ok "every command of the README section is followed here, in order (${#followed[@]} commands)"
else
  not_ok "the README section and this script differ (- README only, + script only)" sync.diff
fi

stop "$daemon_pid"
daemon_pid=""
printf '# %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
