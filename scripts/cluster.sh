#!/usr/bin/env bash
# make cluster: a real, self-hosted Temporal cluster on this machine, without Docker, for
# cdswap: Debian's PostgreSQL on a private port with Temporal's two schemas, the four
# Temporal services (frontend, history, matching, worker) as separate processes with their
# own gRPC and membership ports, the dynamic config of deploy/temporal/dynamicconfig.yaml,
# the namespace with a retention period and cdswap's search attributes, histories and
# visibility records archived with Temporal's filestore archiver, and the Web UI. Everything
# lives under one state folder (CLUSTER_DIR, default .cluster/ in the checkout), so a second
# `make cluster` finds the same swaps.
#
# Usage:
#   scripts/cluster.sh [up]             start it, print TEMPORAL_ADDRESS=host:port once ready,
#                                       and run until Ctrl-C or `down` (a supervisor: a
#                                       process that exits is started again)
#   scripts/cluster.sh down             stop a cluster started by `up` (make cluster-stop)
#   scripts/cluster.sh restart SVC [--kill]
#                                       stop SVC (SIGTERM, or SIGKILL with --kill; `pg_ctl
#                                       stop -m fast` for postgres) and wait until `up` has
#                                       started it again
#   scripts/cluster.sh stop SVC [--kill]   stop SVC and keep it stopped
#   scripts/cluster.sh start SVC        let `up` start SVC again, and wait until it runs
#   SVC is postgres, history, matching, frontend, worker or ui.
#   scripts/cluster.sh check            say what is missing, if anything, and exit non-zero
#
# Settings (environment): CLUSTER_DIR; CLUSTER_PORT (frontend gRPC port, default 27233: the
# cluster takes the 16 ports from there, all below 32768, since Temporal stores membership
# ports in a PostgreSQL smallint); CLUSTER_NAMESPACE (default "default");
# CLUSTER_RETENTION (default 720h: 30 days in the primary store, the archive keeps them after);
# CLUSTER_UI=0 to run without the Web UI; CLUSTER_LOG_LEVEL (default warn).
# The binaries are built once by `scripts/deps.sh --cluster` (make deps-cluster).
set -euo pipefail
# Absolute, and resolved where we were called: the server resolves relative paths against
# its own working directory.
DIR=$(realpath -m "${CLUSTER_DIR:-$(dirname "$0")/../.cluster}")
cd "$(dirname "$0")/.."
REPO=$PWD
# shellcheck source=../internal/versions/versions.env
. internal/versions/versions.env

CACHE=${CDSWAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cdswap}
SERVER_DIR=$CACHE/bin/temporal-server-$TEMPORAL_SERVER_VERSION
UI_BIN=$CACHE/bin/ui-server-$TEMPORAL_UI_VERSION/ui-server
TEMPORAL_CLI=${CDSWAP_TEMPORAL_CLI:-$CACHE/bin/temporal-${TEMPORAL_CLI_VERSION}/temporal}
PGBIN=/usr/lib/postgresql/$POSTGRESQL_VERSION/bin
DYNAMIC_CONFIG=$REPO/deploy/temporal/dynamicconfig.yaml

RUN=$DIR/run
LOGS=$DIR/logs
PGDATA=$DIR/pg/data
NS=${CLUSTER_NAMESPACE:-default}
RETENTION=${CLUSTER_RETENTION:-720h}
LOG_LEVEL=${CLUSTER_LOG_LEVEL:-warn}
# cdswap's search attributes (workflows.SearchAttributeKeys; the cluster test checks them).
SEARCH_ATTRIBUTES=(CdswapHost CdswapDomain CdswapVdev CdswapMedium CdswapOutcome CdswapRequester CdswapTicket CdswapBatch)

BASE=${CLUSTER_PORT:-27233}
if [ "$BASE" -lt 1024 ] || [ $((BASE + 15)) -ge 32768 ]; then
  echo "cluster: CLUSTER_PORT=$BASE: the cluster takes ports $BASE-$((BASE + 15)); keep them within 1024-32767 (Temporal stores membership ports as a PostgreSQL smallint)" >&2
  exit 2
fi
FRONTEND_PORT=$BASE
FRONTEND_HTTP_PORT=$((BASE + 1))
PG_PORT=$((BASE + 2))
UI_PORT=$((BASE + 3))
SERVICES=(history matching frontend worker)
declare -A GRPC_PORT=([frontend]=$BASE [history]=$((BASE + 4)) [matching]=$((BASE + 5)) [worker]=$((BASE + 6)))
declare -A MEMBERSHIP_PORT=([frontend]=$((BASE + 7)) [history]=$((BASE + 8)) [matching]=$((BASE + 9)) [worker]=$((BASE + 10)))
declare -A METRICS_PORT=([frontend]=$((BASE + 11)) [history]=$((BASE + 12)) [matching]=$((BASE + 13)) [worker]=$((BASE + 14)))

say() { echo "cluster: $*" >&2; }
die() { echo "cluster: $*" >&2; exit 1; }

# AS_POSTGRES runs a PostgreSQL program as the postgres user when we are root (PostgreSQL
# refuses to run as root), as ourselves otherwise. It dies with its parent (--pdeathsig), so
# a killed `up` leaves no postmaster behind: an array, not a function, so that `&` runs the
# program itself as our child, not a subshell that would outlive us.
AS_POSTGRES=(setpriv --pdeathsig=KILL --)
if [ "$(id -u)" = 0 ]; then
  AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --clear-groups --pdeathsig=KILL --)
fi

pidfile() { echo "$RUN/$1.pid"; }
pid_of() { cat "$(pidfile "$1")" 2>/dev/null || true; }
alive() {
  local pid
  pid=$(pid_of "$1")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}
valid_service() {
  case $1 in postgres | history | matching | frontend | worker | ui) return 0 ;; esac
  die "no service $1: one of postgres history matching frontend worker ui"
}

# write_server_config writes the config of one Temporal service: all four share everything
# but the metrics port (each process serves its own /metrics).
write_server_config() {
  local svc=$1 cfg=$DIR/config/$1
  mkdir -p "$cfg"
  cat >"$cfg/development.yaml" <<EOF
# Written by scripts/cluster.sh at each start; edit the script, not this file.
log:
  stdout: true
  level: $LOG_LEVEL
persistence:
  defaultStore: postgres-default
  visibilityStore: postgres-visibility
  numHistoryShards: 4
  datastores:
    postgres-default:
      sql:
        pluginName: postgres12
        databaseName: temporal
        connectAddr: 127.0.0.1:$PG_PORT
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: 20
        maxIdleConns: 20
        maxConnLifetime: 1h
    postgres-visibility:
      sql:
        pluginName: postgres12
        databaseName: temporal_visibility
        connectAddr: 127.0.0.1:$PG_PORT
        connectProtocol: tcp
        user: temporal
        password: temporal
        maxConns: 5
        maxIdleConns: 5
        maxConnLifetime: 1h
global:
  membership:
    maxJoinDuration: 30s
    broadcastAddress: 127.0.0.1
  metrics:
    prometheus:
      framework: tally
      timerType: histogram
      listenAddress: 127.0.0.1:${METRICS_PORT[$svc]}
services:
  frontend:
    rpc: {grpcPort: ${GRPC_PORT[frontend]}, membershipPort: ${MEMBERSHIP_PORT[frontend]}, httpPort: $FRONTEND_HTTP_PORT, bindOnLocalHost: true}
  history:
    rpc: {grpcPort: ${GRPC_PORT[history]}, membershipPort: ${MEMBERSHIP_PORT[history]}, bindOnLocalHost: true}
  matching:
    rpc: {grpcPort: ${GRPC_PORT[matching]}, membershipPort: ${MEMBERSHIP_PORT[matching]}, bindOnLocalHost: true}
  worker:
    rpc: {grpcPort: ${GRPC_PORT[worker]}, membershipPort: ${MEMBERSHIP_PORT[worker]}, bindOnLocalHost: true}
clusterMetadata:
  enableGlobalNamespace: false
  failoverVersionIncrement: 10
  masterClusterName: active
  currentClusterName: active
  clusterInformation:
    active:
      enabled: true
      initialFailoverVersion: 1
      rpcName: frontend
      rpcAddress: 127.0.0.1:$FRONTEND_PORT
      httpAddress: 127.0.0.1:$FRONTEND_HTTP_PORT
dcRedirectionPolicy:
  policy: noop
archival:
  history:
    state: enabled
    enableRead: true
    provider:
      filestore: {fileMode: "0644", dirMode: "0755"}
  visibility:
    state: enabled
    enableRead: true
    provider:
      filestore: {fileMode: "0644", dirMode: "0755"}
namespaceDefaults:
  archival:
    history: {state: enabled, URI: "file://$DIR/archival/history"}
    visibility: {state: enabled, URI: "file://$DIR/archival/visibility"}
dynamicConfigClient:
  filepath: $DYNAMIC_CONFIG
  pollInterval: 10s
EOF
}

write_ui_config() {
  mkdir -p "$DIR/ui/config"
  cat >"$DIR/ui/config/development.yaml" <<EOF
# Written by scripts/cluster.sh at each start.
temporalGrpcAddress: 127.0.0.1:$FRONTEND_PORT
host: 127.0.0.1
port: $UI_PORT
enableUi: true
defaultNamespace: $NS
cors:
  allowOrigins: ["http://127.0.0.1:$UI_PORT", "http://localhost:$UI_PORT"]
EOF
}

# start_service starts one process in the background, as a child of this shell that dies
# with it, and records its pid.
start_service() {
  local svc=$1
  case $svc in
    postgres)
      "${AS_POSTGRES[@]}" "$PGBIN/postgres" -D "$PGDATA" -p "$PG_PORT" -c listen_addresses=127.0.0.1 \
        -c unix_socket_directories= -c max_connections=200 >>"$LOGS/postgres.log" 2>&1 &
      ;;
    ui)
      (cd "$DIR/ui" && exec setpriv --pdeathsig=KILL -- "$UI_BIN" --root "$DIR/ui" --config config --env development start) \
        >>"$LOGS/ui.log" 2>&1 &
      ;;
    *)
      (cd "$DIR" && exec setpriv --pdeathsig=KILL -- "$SERVER_DIR/server" --root "$DIR" --config "config/$svc" \
        --env development --allow-no-auth start --service "$svc") >>"$LOGS/$svc.log" 2>&1 &
      ;;
  esac
  echo $! >"$(pidfile "$svc")"
  disown $! # the supervisor reports exits itself, without bash's job messages
}

wait_postgres() {
  for _ in $(seq 300); do
    "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" && return 0
    alive postgres || { tail -20 "$LOGS/postgres.log" >&2; die "PostgreSQL did not start (log: $LOGS/postgres.log)"; }
    sleep 0.1
  done
  die "PostgreSQL did not accept connections on port $PG_PORT within 30 s (log: $LOGS/postgres.log)"
}

sql_tool() { "$SERVER_DIR/sql" --plugin postgres12 --ep 127.0.0.1 -p "$PG_PORT" -u temporal --pw temporal "$@"; }

# setup_postgres creates the database folder, the databases and the schemas once, and
# brings the schemas up to this server's version at every start.
setup_postgres() {
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    say "initdb $PGDATA (PostgreSQL $POSTGRESQL_VERSION)"
    mkdir -p "$PGDATA"
    if [ "$(id -u)" = 0 ]; then
      # PostgreSQL runs as the postgres user, who must reach its folder.
      chmod 755 "$DIR"
      setpriv --reuid=postgres --regid=postgres --clear-groups -- test -x "$DIR" ||
        die "the postgres user cannot reach $DIR: choose a CLUSTER_DIR whose parent folders others may enter"
    fi
    chmod 700 "$PGDATA"
    echo temporal >"$DIR/pg/pwfile"
    if [ "$(id -u)" = 0 ]; then chown -R postgres: "$DIR/pg"; fi
    "${AS_POSTGRES[@]}" "$PGBIN/initdb" -D "$PGDATA" -U temporal --pwfile="$DIR/pg/pwfile" \
      --auth-host=scram-sha-256 --auth-local=peer -E UTF8 >>"$LOGS/postgres.log" 2>&1 ||
      die "initdb failed (log: $LOGS/postgres.log)"
    rm -f "$DIR/pg/pwfile"
  fi
  start_service postgres
  wait_postgres
  local db
  for db in temporal temporal_visibility; do
    if [ ! -e "$DIR/pg/$db.created" ]; then
      say "create database $db and its base schema"
      sql_tool --db "$db" create-database >>"$LOGS/schema.log" 2>&1 || die "create database $db (log: $LOGS/schema.log)"
      sql_tool --db "$db" setup-schema -v 0.0 >>"$LOGS/schema.log" 2>&1 || die "set up schema of $db (log: $LOGS/schema.log)"
      touch "$DIR/pg/$db.created"
    fi
  done
  # The SQL tool carries the server's schemas (--schema-name), so they match the server.
  sql_tool --db temporal update-schema --schema-name postgresql/v12/temporal >>"$LOGS/schema.log" 2>&1 ||
    die "update the schema of temporal (log: $LOGS/schema.log)"
  sql_tool --db temporal_visibility update-schema --schema-name postgresql/v12/visibility >>"$LOGS/schema.log" 2>&1 ||
    die "update the schema of temporal_visibility (log: $LOGS/schema.log)"
}

tctl() { "$TEMPORAL_CLI" --address "127.0.0.1:$FRONTEND_PORT" "$@"; }

# supervise starts again each of the services named that is not running and not held by
# `stop SVC`, at most once a second each.
declare -A last_start=() restarts=()
supervise() {
  local svc
  for svc in "$@"; do
    alive "$svc" && continue
    [ -e "$RUN/hold-$svc" ] && continue
    if [ $((SECONDS - ${last_start[$svc]:-0})) -lt 1 ]; then continue; fi
    say "$svc is not running: starting it again"
    last_start[$svc]=$SECONDS
    restarts[$svc]=$((${restarts[$svc]:-0} + 1))
    start_service "$svc"
  done
}

wait_frontend() {
  local svc
  for _ in $(seq 600); do
    tctl operator cluster health >/dev/null 2>&1 && return 0
    # On a new database the four services race to write the cluster's metadata record, and
    # the losers exit: start them again, as the supervisor will once the cluster is up.
    supervise "${SERVICES[@]}"
    for svc in "${SERVICES[@]}"; do
      if [ "${restarts[$svc]:-0}" -gt 5 ]; then
        tail -20 "$LOGS/$svc.log" >&2
        die "the $svc service keeps exiting (log: $LOGS/$svc.log)"
      fi
    done
    sleep 0.1
  done
  die "the frontend did not answer on port $FRONTEND_PORT within 60 s (logs: $LOGS)"
}

# setup_namespace creates the namespace with its retention and archival, and registers
# cdswap's search attributes, each only if missing.
setup_namespace() {
  local out i
  if ! tctl operator namespace describe --namespace "$NS" >/dev/null 2>&1; then
    say "create namespace $NS: retention $RETENTION, histories and visibility archived under $DIR/archival"
    # The namespace registry of a service just started may not list it for a moment.
    for i in $(seq 50); do
      out=$(tctl operator namespace create --namespace "$NS" --retention "$RETENTION" \
        --history-archival-state enabled --history-uri "file://$DIR/archival/history" \
        --visibility-archival-state enabled --visibility-uri "file://$DIR/archival/visibility" 2>&1) && break
      grep -qi "already" <<<"$out" && break
      [ "$i" = 50 ] && die "create namespace $NS: $out"
      sleep 0.2
    done
  fi
  local have sa
  for i in $(seq 50); do
    have=$(tctl operator search-attribute list --namespace "$NS" 2>&1) && break
    sleep 0.2
  done
  for sa in "${SEARCH_ATTRIBUTES[@]}"; do
    grep -qw "$sa" <<<"$have" && continue
    out=$(tctl operator search-attribute create --namespace "$NS" --name "$sa" --type Keyword 2>&1) ||
      grep -qi "already" <<<"$out" || die "register search attribute $sa: $out"
  done
}

stop_service() { # svc signal
  local svc=$1 sig=${2:-TERM} pid
  pid=$(pid_of "$svc")
  [ -n "$pid" ] || return 0
  if [ "$svc" = postgres ] && [ "$sig" != KILL ]; then
    "${AS_POSTGRES[@]}" "$PGBIN/pg_ctl" stop -D "$PGDATA" -m fast -w -t 60 >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true
  else
    kill "-$sig" "$pid" 2>/dev/null || true
  fi
  for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
}

stop_all() {
  local svc
  trap - INT TERM EXIT
  say "stopping"
  for svc in ui worker frontend matching history postgres; do
    stop_service "$svc" TERM
    rm -f "$(pidfile "$svc")"
  done
  rm -f "$RUN/up.pid" "$RUN"/hold-*
  say "stopped"
}

# check dies saying what to install if something the cluster needs is missing, or if the
# server finds a wrong key or type in the dynamic config.
check() {
  [ -x "$SERVER_DIR/server" ] && [ -x "$SERVER_DIR/sql" ] ||
    die "the Temporal server $TEMPORAL_SERVER_VERSION is not built in $SERVER_DIR: run ./scripts/deps.sh --cluster (make deps-cluster; about 10 minutes once)"
  [ -x "$TEMPORAL_CLI" ] || die "the Temporal CLI is not built at $TEMPORAL_CLI: run ./scripts/deps.sh --temporal (make deps)"
  [ -x "$PGBIN/postgres" ] || die "PostgreSQL $POSTGRESQL_VERSION is not installed in $PGBIN: run ./scripts/deps.sh --cluster as root (apt-get install postgresql)"
  local out
  out=$("$SERVER_DIR/server" validate-dynamic-config "$DYNAMIC_CONFIG" 2>&1) || die "validate $DYNAMIC_CONFIG: $out"
  if grep -qi warning <<<"$out"; then die "the server refuses part of $DYNAMIC_CONFIG: $out"; fi
}

up() {
  local t0=$SECONDS
  check
  if [ -e "$RUN/up.pid" ] && kill -0 "$(cat "$RUN/up.pid")" 2>/dev/null; then
    die "a cluster already runs from $DIR (pid $(cat "$RUN/up.pid")): scripts/cluster.sh down stops it"
  fi
  mkdir -p "$RUN" "$LOGS" "$DIR/archival/history" "$DIR/archival/visibility"
  rm -f "$RUN"/*.pid "$RUN"/hold-*
  echo $$ >"$RUN/up.pid"
  trap stop_all EXIT
  trap 'exit 130' INT TERM

  setup_postgres
  for svc in "${SERVICES[@]}"; do write_server_config "$svc"; done
  for svc in "${SERVICES[@]}"; do start_service "$svc"; done
  wait_frontend
  setup_namespace
  local ui=
  if [ "${CLUSTER_UI:-1}" != 0 ]; then
    if [ -x "$UI_BIN" ]; then
      write_ui_config
      start_service ui
      ui=ui
    else
      say "no Web UI: $UI_BIN is not built (scripts/deps.sh --cluster builds it)"
    fi
  fi
  say "ready in $((SECONDS - t0)) s: PostgreSQL on 127.0.0.1:$PG_PORT, history/matching/frontend/worker, logs in $LOGS"
  echo "TEMPORAL_ADDRESS=127.0.0.1:$FRONTEND_PORT"
  echo "TEMPORAL_NAMESPACE=$NS"
  if [ -n "$ui" ]; then echo "TEMPORAL_UI=http://127.0.0.1:$UI_PORT"; fi

  # Supervise: a process that exited (killed, crashed, or restarted on purpose) is started
  # again, unless `stop SVC` holds it.
  while :; do
    supervise postgres "${SERVICES[@]}" $ui
    sleep 0.2 &
    wait $! || true
  done
}

# wait_restarted waits until `up` runs svc under another pid than old.
wait_restarted() {
  local svc=$1 old=$2
  for _ in $(seq 600); do
    local pid
    pid=$(pid_of "$svc")
    if [ -n "$pid" ] && [ "$pid" != "$old" ] && kill -0 "$pid" 2>/dev/null; then
      [ "$svc" = postgres ] && wait_postgres
      return 0
    fi
    sleep 0.1
  done
  die "$svc was not started again within 60 s: is scripts/cluster.sh up running for $DIR?"
}

cmd=${1:-up}
case $cmd in
  up) up ;;
  check) check ;;
  down)
    if [ -e "$RUN/up.pid" ] && kill -0 "$(cat "$RUN/up.pid")" 2>/dev/null; then
      pid=$(cat "$RUN/up.pid")
      kill -TERM "$pid"
      for _ in $(seq 600); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
      die "the cluster (pid $pid) did not stop within 60 s"
    fi
    if ! compgen -G "$RUN/*.pid" >/dev/null; then
      say "no cluster runs from $DIR"
      exit 0
    fi
    stop_all # leftovers of an `up` that was killed
    ;;
  stop | restart)
    svc=${2:?"usage: $0 $cmd SERVICE [--kill]"}
    valid_service "$svc"
    sig=TERM
    [ "${3:-}" = --kill ] && sig=KILL
    [ "$cmd" = stop ] && touch "$RUN/hold-$svc"
    old=$(pid_of "$svc")
    stop_service "$svc" "$sig"
    how="SIG$sig"
    if [ "$svc" = postgres ] && [ "$sig" != KILL ]; then how="pg_ctl stop -m fast"; fi
    say "$svc (pid ${old:-none}) stopped with $how"
    if [ "$cmd" = restart ]; then wait_restarted "$svc" "$old"; fi
    ;;
  start)
    svc=${2:?"usage: $0 start SERVICE"}
    valid_service "$svc"
    old=$(pid_of "$svc")
    alive "$svc" && exit 0
    rm -f "$RUN/hold-$svc"
    wait_restarted "$svc" "$old"
    ;;
  *) die "usage: $0 [up | down | check | restart SERVICE [--kill] | stop SERVICE [--kill] | start SERVICE]" ;;
esac
