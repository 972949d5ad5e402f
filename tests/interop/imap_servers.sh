# shellcheck shell=bash
# Helpers shared by tests/interop/imap_peers.sh and scripts/imap-bench (sourced, not run):
# start a throwaway Dovecot and a throwaway lnmp-bridge daemon on free loopback ports,
# each in a folder of the caller's temporary work folder, and stop them again.
#
# The caller sets `work` (an absolute temporary folder), defines nothing else, and calls
#   dovecot_start            -> dovecot_port, dovecot_pid    (users alice, bob; password pw)
#   daemon_start BIN         -> imap_port, imaps_port, daemon_pid, daemon_cfg
#   daemon_user_add BIN NAME PASSWORD
#   servers_stop             (from its EXIT trap; stops only what these helpers started)
#
# Dovecot runs in the foreground (-F) under `timeout`, so its PID is known and nothing
# daemonizes; mail is kept in Maildirs owned by the system user vmail (created when
# missing, which needs root). The daemon gets a config file in $work/daemon: SQLite in
# its data folder, SMTP listeners off, the embedded relay on a free port, DNS pointed at
# a closed loopback port (nothing leaves the machine), IMAP on free ports with plaintext
# LOGIN allowed from loopback. DAEMON_EXTRA_IMAP adds lines to its [imap] table, and
# DOVECOT_EXTRA to the end of dovecot.conf.

dovecot_pid=""
daemon_pid=""
: "${work:?set work to a temporary folder before sourcing imap_servers.sh}"

# shellcheck source=tests/interop/peers_lib.sh
. "${root:?set root to the repository before sourcing imap_servers.sh}/tests/interop/peers_lib.sh"

# wait_port PORT PID LOG...: until PORT accepts, while PID lives (60 s at most).
wait_port() {
  local port=$1 pid=$2
  shift 2
  for _ in $(seq 1 600); do
    accepts "$port" && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "gave up waiting for 127.0.0.1:$port:" >&2
  cat "$@" >&2 2>/dev/null || true
  return 1
}

servers_stop() {
  stop "$daemon_pid"
  daemon_pid=""
  stop "$dovecot_pid"
  dovecot_pid=""
}

# The same mailboxes as the daemon's (INBOX, Sent, Drafts, Trash, Junk, Archive,
# Requests), each created and subscribed on first login, separator "/".
dovecot_start() {
  local d="$work/dovecot"
  if ! id vmail >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { echo "Dovecot needs the system user vmail (run as root to create it)" >&2; return 1; }
    useradd -u 5000 -U -r -M -d /nonexistent -s /usr/sbin/nologin vmail 2>/dev/null ||
      useradd -U -r -M -d /nonexistent -s /usr/sbin/nologin vmail
  fi
  mkdir -p "$d"/{mail,run,state}
  chmod 711 "$work" "$d"
  chown vmail:vmail "$d/mail"
  dovecot_port=$(free_port)
  printf 'alice:{PLAIN}pw\nbob:{PLAIN}pw\n' >"$d/users"
  cat >"$d/dovecot.conf" <<CONF
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
mail_max_userip_connections = 50
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users
}
userdb {
  driver = static
  args = uid=vmail gid=vmail home=$d/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $dovecot_port
  }
  inet_listener imaps {
    port = 0
  }
}
service anvil {
  chroot =
}
namespace inbox {
  inbox = yes
  separator = /
  mailbox INBOX {
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
  mailbox Archive {
    special_use = \\Archive
    auto = subscribe
  }
  mailbox Requests {
    auto = subscribe
  }
}
${DOVECOT_EXTRA:-}
CONF
  timeout 3600 dovecot -F -c "$d/dovecot.conf" >"$d/stdout.log" 2>&1 &
  dovecot_pid=$!
  wait_port "$dovecot_port" "$dovecot_pid" "$d/stdout.log" "$d/dovecot.log"
}

# daemon_start BIN: writes the config and starts `BIN serve` (users are added before,
# with daemon_user_add, which needs the config: call daemon_config first).
daemon_config() {
  local d="$work/daemon"
  mkdir -p "$d"
  imap_port=$(free_port)
  imaps_port=$(free_port)
  daemon_cfg="$d/lnmp-bridge.toml"
  cat >"$daemon_cfg" <<CONF
# Written by tests/interop/imap_servers.sh for one test run.
[server]
domain = "bridge.test"
hostname = "mx.bridge.test"
data_dir = "$d/data"

[http]
listen = "127.0.0.1:0"

[relay]
listen = "127.0.0.1:$(free_port)"

[smtp]
mx_listen = ""
submission_listen = ""
submissions_listen = ""

[dns]
nameservers = ["127.0.0.1:$(free_port)"]
timeout_seconds = 1

[limits]
shutdown_grace_seconds = 5

[imap]
listen = "127.0.0.1:$imap_port"
tls_listen = "127.0.0.1:$imaps_port"
allow_plaintext_auth_on_loopback = true
${DAEMON_EXTRA_IMAP:-}
CONF
}
daemon_user_add() { # BIN NAME PASSWORD
  printf '%s\n' "$3" | timeout 60 "$1" --config "$daemon_cfg" user add "$2" --password-stdin >/dev/null
}
daemon_start() { # BIN
  local d="$work/daemon"
  timeout 3600 "$1" --config "$daemon_cfg" serve >"$d/daemon.out" 2>"$d/daemon.err" &
  daemon_pid=$!
  wait_port "$imap_port" "$daemon_pid" "$d/daemon.out" "$d/daemon.err"
}
# The daemon's own PID (the child of its `timeout` wrapper), for /proc/<pid>/status.
daemon_real_pid() {
  pgrep -P "$daemon_pid" | head -1
}
