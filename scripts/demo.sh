#!/usr/bin/env bash
# make demo: the main job end to end, on this machine, with nothing but what `make deps`
# installs. It starts a real Temporal server (the CLI's dev server, SQLite, with its Web UI),
# a simulated Xen dom0 (xensim: our xenstored, a stubdom guest and a dom0-QEMU guest, real
# QEMU where installed) and a cdswap-worker for that host; then, on each guest, inserts a
# medium, inserts another, and ejects, printing each swap's live steps and its history. Then
# a fleet: two more xensim hosts sharing the ISO library, several guests each, and a batch
# that changes every drive holding one image on both (a dry run first, then the batch with
# its progress bar, paused and resumed while it runs), and the audit at the end: the
# batch's report, `cdswap list --batch` and `cdswap audit export`.
# Everything it started is stopped when it ends or is interrupted.
# CDSWAP_CLUSTER=1 runs the same demo on a real Temporal cluster (scripts/cluster.sh:
# PostgreSQL and the four Temporal services as separate processes) instead of the dev server.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${DEMO_DIR:-$PWD/.demo}
HOST=${DEMO_HOST:-demo0}
PORT=${DEMO_PORT:-17233}
UI_PORT=${DEMO_UI_PORT:-18233}
BIN=$DEMO/bin
LOGS=$DEMO/logs
SIM=$DEMO/xensim
ISOS=$DEMO/isos # the ISO library every host of the demo shares (xensim --isos)
FLEET=(${DEMO_FLEET:-demo1 demo2})
pids=()
cluster_pid=

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
stop_all() {
  local p
  for ((i=${#pids[@]}-1; i>=0; i--)); do
    p=${pids[$i]}
    kill -INT "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  # The cluster last, once nothing uses it (a background script ignores SIGINT: ask it to stop).
  if [ -n "$cluster_pid" ]; then
    CLUSTER_DIR=$DEMO/cluster ./scripts/cluster.sh down || kill -KILL "$cluster_pid" 2>/dev/null || true
  fi
}
trap 'stop_all' EXIT
trap 'echo; echo "demo: interrupted, stopping what it started"; exit 130' INT TERM

mkdir -p "$BIN" "$LOGS"
rm -rf "$SIM" "$DEMO"/xensim-* "$ISOS" "$DEMO/audit" "$DEMO/temporal.db" "$DEMO/cluster" # each demo starts with an empty history

say "Building cdswap, cdswap-worker and xensim"
go build -o "$BIN/cdswap" ./starter
go build -o "$BIN/cdswap-worker" ./worker
go build -o "$BIN/xensim" ./xensim

UI_URL=http://127.0.0.1:$UI_PORT
if [ "${CDSWAP_CLUSTER:-}" = 1 ]; then
  say "Starting a Temporal cluster: PostgreSQL, frontend, history, matching, worker (state in $DEMO/cluster)"
  CLUSTER_DIR=$DEMO/cluster CLUSTER_PORT=$PORT ./scripts/cluster.sh up >"$LOGS/cluster.out" 2>"$LOGS/cluster.log" &
  cluster_pid=$!
  for _ in $(seq 600); do
    grep -q "^TEMPORAL_ADDRESS=" "$LOGS/cluster.out" 2>/dev/null && break
    kill -0 "$cluster_pid" 2>/dev/null || { cat "$LOGS/cluster.log"; echo "demo: the cluster did not start" >&2; exit 1; }
    sleep 0.2
  done
  export TEMPORAL_ADDRESS
  TEMPORAL_ADDRESS=$(sed -n 's/^TEMPORAL_ADDRESS=//p' "$LOGS/cluster.out")
  UI_URL=$(sed -n 's/^TEMPORAL_UI=//p' "$LOGS/cluster.out")
  cat "$LOGS/cluster.log" "$LOGS/cluster.out"
else
  say "Starting the Temporal dev server (state in $DEMO/temporal.db)"
  "$BIN/cdswap" dev-server --db "$DEMO/temporal.db" --port "$PORT" --ui --ui-port "$UI_PORT" >"$LOGS/temporal.log" 2>&1 &
  pids+=($!)
  export TEMPORAL_ADDRESS=127.0.0.1:$PORT
  for _ in $(seq 300); do
    grep -q "Web UI" "$LOGS/temporal.log" 2>/dev/null && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$LOGS/temporal.log"; echo "demo: the dev server did not start" >&2; exit 1; }
    sleep 0.2
  done
  cat "$LOGS/temporal.log"
fi

say "Starting xensim: host $HOST with a stubdom guest and a dom0-QEMU guest"
start_host() { # host, folder, then xensim's guest flags; then its cdswap-worker
  local host=$1 dir=$2
  shift 2
  "$BIN/xensim" --dir "$dir" --host "$host" --isos "$ISOS" "$@" >"$LOGS/xensim-$host.out" 2>"$LOGS/xensim-$host.log" &
  pids+=($!)
  for _ in $(seq 300); do
    [ -s "$dir/xensim.json" ] && break
    kill -0 "${pids[-1]}" 2>/dev/null || { cat "$LOGS/xensim-$host.log"; echo "demo: xensim $host did not start" >&2; exit 1; }
    sleep 0.2
  done
  cat "$LOGS/xensim-$host.out"
  # The worker flags are the ones xensim printed (--host, --xenstore, --qmp-dir, --libxl-dir, --iso-root).
  local wflags
  read -r -a wflags < <(sed -n 's/^worker flags: //p' "$LOGS/xensim-$host.out")
  "$BIN/cdswap-worker" "${wflags[@]}" --address "$TEMPORAL_ADDRESS" >"$LOGS/worker-$host.log" 2>&1 &
  pids+=($!)
  sleep 1
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$LOGS/worker-$host.log"; echo "demo: the worker of $host did not start" >&2; exit 1; }
  echo "cdswap-worker for $host running (log: $LOGS/worker-$host.log)"
}
start_host "$HOST" "$SIM" --stubdom 1 --dom0 1
swap() { # guest, then insert MEDIUM or eject
  local guest=$1 verb=$2 medium=${3:-}
  local args=(--host "$HOST" --domain "$guest" --vdev hdc --reason "make demo" --ticket DEMO-1 --wait)
  [ "$verb" = insert ] && args+=(--medium "$medium")
  say "cdswap $verb ${args[*]}"
  "$BIN/cdswap" "$verb" "${args[@]}"
  say "cdswap history (guest $guest, last swap)"
  "$BIN/cdswap" history --host "$HOST" --domain "$guest" --vdev hdc
}
rollback_demo() {
  say "A stubdom that never publishes the new fdset (xensim ctl set never-add-fd=true)"
  # libxl would leave this drive ejected, with its vbd gone, after its 40 s timer ("Virtual
  # device not found" ever after). cdswap waits 25 s for the fdset, then puts the old medium
  # back. The knob is cleared once the stubdom has passed over the new disk, as an operator
  # would fix the stubdom: the restore needs the stubdom to add the old disk again.
  "$BIN/xensim" ctl --dir "$SIM" set never-add-fd=true --domain stubdom-1
  "$BIN/cdswap" insert --host "$HOST" --domain stubdom-1 --vdev hdc --medium "$ISOS/tools.iso" \
    --reason "make demo: rollback" --ticket DEMO-2 --wait &
  swap_pid=$!
  for _ in $(seq 100); do
    "$BIN/cdswap" status --host "$HOST" --domain stubdom-1 --vdev hdc 2>/dev/null | grep -q "running, step .*WaitFdset" && break
    sleep 0.2
  done
  sleep 1
  "$BIN/xensim" ctl --dir "$SIM" set never-add-fd=false --domain stubdom-1
  if wait "$swap_pid"; then
    echo "demo: this swap was expected to fail and roll back" >&2; exit 1
  fi
  say "cdswap history (guest stubdom-1, the rolled-back swap)"
  "$BIN/cdswap" history --host "$HOST" --domain stubdom-1 --vdev hdc
}

for guest in stubdom-1 dom0-1; do
  swap "$guest" insert "$ISOS/tools.iso"
  swap "$guest" insert "$ISOS/rescue.iso"
  [ "$guest" = stubdom-1 ] && rollback_demo
  swap "$guest" eject
done

fleet_demo() {
  local hosts old=$ISOS/debian-netinst.iso new=$ISOS/tools.iso id
  hosts=$(IFS=,; echo "${FLEET[*]}")
  say "A fleet: hosts $hosts, 3 stubdom and 3 dom0 guests each (fake QEMU), sharing the ISO library $ISOS"
  for h in "${FLEET[@]}"; do
    # A stub domain takes 1 s to add a new disk's fd, so that the batch runs long enough to pause.
    start_host "$h" "$DEMO/xensim-$h" --stubdom 3 --dom0 3 --qemu fake --agent-delay 1s
  done
  local sel=(--hosts "$hosts" --holding "$old" --medium "$new")
  say "cdswap batch start ${sel[*]} --dry-run"
  "$BIN/cdswap" batch start "${sel[@]}" --dry-run

  say "cdswap batch start ${sel[*]} --limit 4 --per-host 2 --wait (paused and resumed meanwhile)"
  # The operator, meanwhile: pause the batch once it runs, look at it, resume it.
  (
    for _ in $(seq 100); do
      id=$("$BIN/cdswap" batch list --json 2>/dev/null | sed -n 's/.*"batch": *"\([^"]*\)".*/\1/p' | head -n1)
      [ -n "$id" ] && break
      sleep 0.2
    done
    sleep 1
    echo "\$ cdswap batch pause $id --reason 'make demo: look before going on'"
    "$BIN/cdswap" batch pause "$id" --reason "make demo: look before going on"
    sleep 3
    echo "\$ cdswap batch resume $id"
    "$BIN/cdswap" batch resume "$id" --reason "make demo: go on"
  ) >"$LOGS/operator.log" 2>&1 &
  local operator=$!
  pids+=("$operator")
  "$BIN/cdswap" batch start "${sel[@]}" --limit 4 --per-host 2 --reason "make demo: drivers" --ticket DEMO-3 --wait
  wait "$operator" || true
  say "Meanwhile, from another terminal:"
  cat "$LOGS/operator.log"

  id=$("$BIN/cdswap" batch list --json | sed -n 's/.*"batch": *"\([^"]*\)".*/\1/p' | head -n1)
  say "cdswap batch report $id"
  "$BIN/cdswap" batch report "$id"
  say "cdswap list --batch $id (the audit: who changed what, when and why)"
  "$BIN/cdswap" list --batch "$id"
  say "cdswap audit export --since 1h --batch $id --out $DEMO/audit"
  "$BIN/cdswap" audit export --since 1h --batch "$id" --out "$DEMO/audit"
  ls "$DEMO/audit" | head -n 5
}
fleet_demo

say "Done"
echo "Temporal Web UI: $UI_URL/namespaces/default/workflows (open it while the demo runs: DEMO_KEEP=1 make demo)"
echo "All swaps: $BIN/cdswap list --host $HOST"
"$BIN/cdswap" list --host "$HOST"
"$BIN/cdswap" batch list
if [ "${DEMO_KEEP:-}" = 1 ]; then
  echo "DEMO_KEEP=1: everything keeps running; press Ctrl-C to stop it."
  wait
fi
