#!/usr/bin/env bash
# Installs what cdswap's tests and demo need on a fresh Debian machine, or says what is
# missing. As root it installs Debian's qemu-system-x86 (real QEMU for the QMP tests and the
# simulated guests) and xenstore-utils (the C libxenstore clients the tests point at our
# xenstored), and builds the Temporal CLI dev server once into a cache folder.
# With CI=true anything missing is an error, never a skip.
set -euo pipefail

TEMPORAL_CLI_VERSION=${TEMPORAL_CLI_VERSION:-v1.5.1}
CACHE=${CDSWAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cdswap}
TEMPORAL_BIN="$CACHE/bin/temporal-$TEMPORAL_CLI_VERSION/temporal"
want_temporal=0
[ "${1:-}" = "--temporal" ] && want_temporal=1

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v xenstore-read >/dev/null || missing+=(xenstore-utils)

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing[*]} from Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run as root: apt-get install ${missing[*]}" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
fi

if [ $want_temporal = 1 ] && [ ! -x "$TEMPORAL_BIN" ]; then
  echo "deps: building the Temporal CLI $TEMPORAL_CLI_VERSION dev server into $TEMPORAL_BIN (once; about 4 minutes on 2 cores)"
  mkdir -p "$(dirname "$TEMPORAL_BIN")"
  # Built from its own go.mod, outside our module: the server cannot share a module with SDK v1.51.0.
  (cd "$(mktemp -d)" && GOFLAGS= GOBIN="$(dirname "$TEMPORAL_BIN")" go install "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION")
fi
if [ $want_temporal = 1 ]; then
  echo "$TEMPORAL_BIN"
fi
