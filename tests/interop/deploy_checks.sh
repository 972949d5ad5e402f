#!/usr/bin/env bash
# The deploy/ files, checked as far as a machine without a Docker engine can:
#
# 1. deploy/lnmp-bridge.service passes `systemd-analyze verify` without a word (its
#    ExecStart pointed at the built binary, the only change), and keeps its hardening:
#    a dedicated user, CAP_NET_BIND_SERVICE only, NoNewPrivileges, ProtectSystem=strict
#    with the data folder writable, LimitNOFILE, Restart=on-failure.
# 2. deploy/Dockerfile: multi-stage (rust:1.95, cargo build --release --locked), a slim
#    Debian runtime, a non-root USER, /var/lib/lnmp-bridge as VOLUME and WORKDIR, EXPOSE
#    equal to the ports its ENV gives the listeners, a HEALTHCHECK on /healthz. Then the
#    image's command line itself: ENTRYPOINT + CMD with exactly the Dockerfile's ENV, as
#    an unprivileged user, in an empty folder standing for the volume, in a network
#    namespace of its own where unprivileged ports start at 0 (what Docker sets up) — the
#    daemon starts, the HEALTHCHECK command passes, and every EXPOSEd port accepts.
# 3. deploy/compose.yaml parses as YAML and wires the daemon to PostgreSQL (the URL in
#    LNMP__DATABASE__URL, a healthcheck, depends_on with condition service_healthy, the
#    volume at the image's data folder, ports published unchanged). With a PostgreSQL
#    at LNMP_TEST_DATABASE_URL (scripts/test starts one), the image's command line with
#    the Dockerfile's and compose's environment serves from a fresh database there and
#    answers /healthz (on loopback ports instead of the standard ones, since this one
#    shares the machine's network).
#
# Needs systemd-analyze (Debian: systemd), curl, python3 (PyYAML for 3, in PYTHON or
# python3: the YAML check is skipped with a note without it), and root for 2 (unshare,
# setpriv; skipped with a note otherwise). The binary: LNMP_BIN, by default ${CARGO_TARGET_DIR:-target}/debug/
# lnmp-bridge. Everything happens in a temporary folder, removed on exit (kept with
# KEEP_WORK=1). Each check prints "ok - ..." or "not ok - ..."; the last line counts them,
# and the exit status is 1 if any failed.
# shellcheck disable=SC2154 # env, expose, entrypoint, cmd, health... come from image.sh, generated
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin:/sbin"
# shellcheck source=tests/interop/peers_lib.sh
source "$root/tests/interop/peers_lib.sh"

lnmp_binaries lnmp-bridge
py="${PYTHON:-python3}"
need_tools "Debian: systemd curl python3" systemd-analyze curl python3

while read -r v; do unset "$v"; done < <(compgen -e | grep -E '^LNMP_' | grep -v '^LNMP_TEST_' || true)

work=$(mktemp -d)
daemon_pid=""
db_created=""
admin_url=""
cleanup() {
  stop "$daemon_pid"
  wait 2>/dev/null || true
  if [ -n "$db_created" ]; then
    psql "$admin_url" -qc "drop database if exists \"$db_created\"" >/dev/null 2>&1 || true
  fi
  if [ "${KEEP_WORK:-0}" = 1 ]; then echo "# work folder kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
# The binary where an unprivileged user can run it, as /usr/local/bin/lnmp-bridge is.
chmod 0755 "$work"
mkdir -m 0755 "$work/bin"
install -m 0755 "$lnmp_bin" "$work/bin/lnmp-bridge"

# --- 1. the systemd unit ---------------------------------------------------------------

unit=deploy/lnmp-bridge.service
mkdir "$work/unit"
sed "s#/usr/local/bin/lnmp-bridge#$work/bin/lnmp-bridge#g" "$unit" >"$work/unit/lnmp-bridge.service"
verify_unit() {
  local rc=0
  timeout 60 systemd-analyze verify "$work/unit/lnmp-bridge.service" >"$work/verify.log" 2>&1 || rc=$?
  [ "$rc" = 0 ] && [ ! -s "$work/verify.log" ]
}
check "systemd-analyze verify $unit: no errors, no warnings" "$work/verify.log" -- verify_unit
# The loopback check above needs the ExecStart path to exist; the unit itself names the
# installed path the README installs to.
check "$unit runs /usr/local/bin/lnmp-bridge serve with the data folder's config" -- \
  grep -qx 'ExecStart=/usr/local/bin/lnmp-bridge serve --config /var/lib/lnmp-bridge/lnmp-bridge.toml' "$unit"
for line in 'User=lnmp-bridge' 'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
  'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' 'NoNewPrivileges=yes' 'ProtectSystem=strict' \
  'ReadWritePaths=/var/lib/lnmp-bridge' 'LimitNOFILE=65536' 'Restart=on-failure'; do
  check "$unit: $line" -- grep -qx "$line" "$unit"
done
check "$unit: no root (User is not root)" -- bash -c "! grep -Eq '^User=(root|0)\$' $unit"

# --- 2. the Dockerfile and its entry command line --------------------------------------

# The runtime stage, read into shell arrays: env (K=V), entry, cmd, health, expose.
"$py" - deploy/Dockerfile >"$work/image.sh" 2>"$work/image.err" <<'EOF' || { cat "$work/image.err" >&2; exit 1; }
import json, shlex, sys
lines, cur = [], ""
for raw in open(sys.argv[1]):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    lines.append(cur + s)
    cur = ""
stages = []
for l in lines:
    word, _, rest = l.strip().partition(" ")
    word = word.upper()
    if word == "FROM":
        stages.append({"from": rest.strip(), "run": [], "env": [], "expose": []})
        continue
    st = stages[-1]
    if word == "RUN":
        st["run"].append(rest)
    elif word == "ENV":
        st["env"] += shlex.split(rest)
    elif word == "EXPOSE":
        st["expose"] += rest.split()
    elif word in ("ENTRYPOINT", "CMD"):
        st[word.lower()] = json.loads(rest)
    elif word == "HEALTHCHECK":
        st["health"] = json.loads(rest[rest.index("CMD") + 3:])
    elif word in ("WORKDIR", "USER", "VOLUME"):
        st[word.lower()] = rest.strip()
q = lambda v: " ".join(shlex.quote(x) for x in v)
build, run = stages[0], stages[-1]
print(f"stages={len(stages)}")
print(f"build_from={shlex.quote(build['from'])}")
print(f"build_run={shlex.quote(' && '.join(build['run']))}")
print(f"run_from={shlex.quote(run['from'])}")
print(f"run_all={shlex.quote(' && '.join(run['run']))}")
for k in ("workdir", "user", "volume"):
    print(f"{k}={shlex.quote(run.get(k, ''))}")
for k in ("env", "expose", "entrypoint", "cmd", "health"):
    print(f"{k}=({q(run.get(k, []))})")
EOF
# shellcheck disable=SC1091
source "$work/image.sh"
{
  check "Dockerfile: two stages, rust:1.95 builder running cargo build --release --locked" -- \
    bash -c "[ $stages = 2 ] && [[ '$build_from' == rust:1.95* ]] && [[ '$build_run' == *'cargo build --release --locked'* ]]"
  check "Dockerfile: a slim Debian runtime with ca-certificates and curl" -- \
    bash -c "[[ '$run_from' == debian:*-slim ]] && [[ '$run_all' == *ca-certificates* ]] && [[ '$run_all' == *curl* ]]"
  check "Dockerfile: runs as a non-root user created in the image (USER $user)" -- \
    bash -c "[ -n '$user' ] && [ '$user' != root ] && [ '$user' != 0 ] && [[ '$run_all' == *'useradd'*'$user'* ]]"
  check "Dockerfile: /var/lib/lnmp-bridge is the VOLUME and the WORKDIR" -- \
    bash -c "[ '$volume' = /var/lib/lnmp-bridge ] && [ '$workdir' = /var/lib/lnmp-bridge ]"
  check "Dockerfile: ENTRYPOINT + CMD is lnmp-bridge serve" -- \
    bash -c "[ '${entrypoint[*]} ${cmd[*]}' = '/usr/local/bin/lnmp-bridge serve' ]"
  check "Dockerfile: the HEALTHCHECK asks /healthz" -- bash -c "[[ '${health[*]}' == *'/healthz'* ]]"
}
# Ports the ENV gives the listeners, against EXPOSE.
listen_ports=$(printf '%s\n' "${env[@]}" | sed -n 's/^LNMP__[A-Z]*__[A-Z_]*LISTEN=.*:\([0-9]*\)$/\1/p' | sort -n | tr '\n' ' ')
expose_ports=$(printf '%s\n' "${expose[@]}" | sort -n | tr '\n' ' ')
check "Dockerfile: EXPOSE ($expose_ports) is the listeners' ports ($listen_ports)" -- \
  bash -c "[ -n '$listen_ports' ] && [ '$listen_ports' = '$expose_ports' ]"

if [ "$(id -u)" != 0 ] || ! unshare -n true 2>/dev/null; then
  echo "# skipped: the image's command line in a network namespace of its own (needs root: unshare, setpriv)"
else
  vol="$work/volume" # the empty volume, owned by the image's user (here: nobody)
  mkdir -m 0700 "$vol"
  chown nobody:nogroup "$vol" 2>/dev/null || chown nobody "$vol"
  nobody_gid=$(id -g nobody)
  # argv as the image runs it, /usr/local/bin/lnmp-bridge being the binary copied above.
  argv=("${entrypoint[@]}" "${cmd[@]}")
  argv[0]="$work/bin/lnmp-bridge"
  # shellcheck disable=SC2016 # the inner script's own expansions
  {
    echo 'set -u'
    echo 'ip link set lo up && sysctl -qw net.ipv4.ip_unprivileged_port_start=0 || exit 1'
    printf 'cd %q || exit 1\n' "$vol"
    printf 'setpriv --reuid=nobody --regid=%q --clear-groups env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=%q' "$nobody_gid" "$vol"
    printf ' %q' "${env[@]}" "${argv[@]}"
    printf ' >%q 2>%q &\n' "$work/image-daemon.out" "$work/image-daemon.err"
    echo 'pid=$!'
    echo 'healthy=no'
    # Like the HEALTHCHECK's start period: up to 60 s for the first pass.
    echo 'for _ in $(seq 1 120); do'
    printf '  if timeout 10'
    printf ' %q' "${health[@]}"
    printf ' >%q 2>&1; then healthy=yes; break; fi\n' "$work/health.out"
    echo '  kill -0 "$pid" 2>/dev/null || break; sleep 0.5'
    echo 'done'
    echo 'echo "healthy $healthy"'
    echo "for p in ${expose[*]}; do"
    echo '  if timeout 5 bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" 2>/dev/null; then echo "port $p open"; else echo "port $p closed"; fi'
    echo 'done'
    echo 'kill "$pid"; for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done'
    echo 'kill -9 "$pid" 2>/dev/null; wait "$pid"; echo "exit $?"'
  } >"$work/in-netns.sh"
  timeout 180 unshare -n bash "$work/in-netns.sh" >"$work/netns.log" 2>&1 || true
  check "the image's command line (${entrypoint[*]} ${cmd[*]}, the Dockerfile's ENV) as nobody on an empty volume passes the HEALTHCHECK" \
    "$work/netns.log" "$work/image-daemon.out" "$work/image-daemon.err" "$work/health.out" -- \
    grep -qx 'healthy yes' "$work/netns.log"
  for p in "${expose[@]}"; do
    check "the image's daemon accepts on EXPOSEd port $p" "$work/netns.log" -- grep -qx "port $p open" "$work/netns.log"
  done
  check "the image's daemon stops cleanly on SIGTERM" "$work/netns.log" "$work/image-daemon.err" -- \
    grep -qx 'exit 0' "$work/netns.log"
  check "the daemon kept its data in the volume (master key, self-signed certificate)" -- \
    test -s "$vol/data/master.key" -a -s "$vol/data/tls/cert.pem"
fi

# --- 3. compose.yaml -------------------------------------------------------------------

ypy=""
for p in "$py" python3 /usr/bin/python3; do
  if "$p" -c 'import yaml' 2>/dev/null; then ypy=$p; break; fi
done
if [ -z "$ypy" ]; then
  echo "# skipped: compose.yaml checks (no Python with PyYAML; Debian: python3-yaml)"
else
  "$ypy" - deploy/compose.yaml "${expose[*]}" >"$work/compose.log" 2>&1 <<'EOF' || true
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
expose = sorted(sys.argv[2].split(), key=int)
def say(ok, what):
    print(("ok" if ok else "not ok") + " - " + what)
s = doc.get("services", {})
say(set(s) >= {"lnmp-bridge", "postgres"}, "compose.yaml parses; services lnmp-bridge and postgres")
d, pg = s.get("lnmp-bridge", {}), s.get("postgres", {})
env = d.get("environment", {})
url = env.get("LNMP__DATABASE__URL", "") if isinstance(env, dict) else ""
say(url.startswith("postgres://") and "@postgres:" in url, "compose: LNMP__DATABASE__URL names the postgres service")
say(d.get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
    "compose: the daemon depends_on postgres with condition service_healthy")
say("pg_isready" in str(pg.get("healthcheck", {}).get("test")), "compose: postgres has a pg_isready healthcheck")
vols = [str(v) for v in d.get("volumes", [])]
say(any(v.endswith(":/var/lib/lnmp-bridge") for v in vols), "compose: a named volume at /var/lib/lnmp-bridge")
say(any(str(v).endswith(":/var/lib/postgresql/data") for v in pg.get("volumes", [])), "compose: a volume for PostgreSQL's data")
named = set(doc.get("volumes", {}) or {})
say(all(v.split(":")[0] in named for v in vols + [str(v) for v in pg.get("volumes", [])]), "compose: the volumes are declared")
ports = [str(p) for p in d.get("ports", [])]
say(all(p.split(":")[0] == p.split(":")[1] for p in ports) and sorted((p.split(":")[1] for p in ports), key=int) == expose,
    "compose: the EXPOSEd ports are published unchanged (autoconfig announces the listeners' ports)")
say(d.get("build", {}).get("dockerfile") == "deploy/Dockerfile" and d.get("build", {}).get("context") == "..",
    "compose: builds deploy/Dockerfile from the repository root")
print("url " + url)
EOF
  grep -E '^(not )?ok - ' "$work/compose.log" || not_ok "compose.yaml checks ran" "$work/compose.log"
  passed=$((passed + $(grep -c '^ok - ' "$work/compose.log" || true)))
  failed=$((failed + $(grep -c '^not ok - ' "$work/compose.log" || true)))
fi

# The compose service's environment on the machine's PostgreSQL.
if [ -z "${LNMP_TEST_DATABASE_URL:-}" ] || ! command -v psql >/dev/null; then
  echo "# skipped: the image's command line on PostgreSQL (set LNMP_TEST_DATABASE_URL; scripts/test does)"
else
  admin_url="${LNMP_TEST_DATABASE_URL%/*}/postgres"
  db="deploy_checks_$$"
  if psql "$admin_url" -qc "create database \"$db\"" >/dev/null 2>"$work/psql.err"; then
    db_created=$db
    pgvol="$work/pg-volume"
    mkdir -m 0700 "$pgvol"
    http_port=$(free_port)
    # The Dockerfile's ENV with loopback ports, then compose's database URL (its host and
    # password stand for the postgres service's).
    pg_env=()
    for kv in "${env[@]}"; do
      case "$kv" in
        LNMP__HTTP__LISTEN=*) pg_env+=("LNMP__HTTP__LISTEN=127.0.0.1:$http_port") ;;
        LNMP__*LISTEN=*) pg_env+=("${kv%%=*}=127.0.0.1:$(free_port)") ;;
        *) pg_env+=("$kv") ;;
      esac
    done
    pg_env+=("LNMP__DATABASE__URL=${LNMP_TEST_DATABASE_URL%/*}/$db")
    (cd "$pgvol" && exec env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$pgvol" "${pg_env[@]}" \
      timeout 300 "$work/bin/lnmp-bridge" "${cmd[@]}" >"$work/pg-daemon.out" 2>"$work/pg-daemon.err") &
    daemon_pid=$!
    healthy() {
      for _ in $(seq 1 120); do
        curl -fsSk --max-time 4 "https://127.0.0.1:$http_port/healthz" >"$work/pg-health.out" 2>&1 && return 0
        kill -0 "$daemon_pid" 2>/dev/null || return 1
        sleep 0.5
      done
      return 1
    }
    check "the image's command line with compose's LNMP__DATABASE__URL serves from PostgreSQL and answers /healthz" \
      "$work/pg-daemon.out" "$work/pg-daemon.err" "$work/pg-health.out" -- healthy
    check "the daemon made its tables in that PostgreSQL database" "$work/pg-daemon.err" -- \
      bash -c "[ \"\$(psql '${LNMP_TEST_DATABASE_URL%/*}/$db' -qtAc \"select count(*) from information_schema.tables where table_schema = 'public'\")\" -gt 0 ]"
    stop "$daemon_pid"
    daemon_pid=""
  else
    not_ok "create a database for the PostgreSQL check" "$work/psql.err"
  fi
fi

printf '# %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" = 0 ]
