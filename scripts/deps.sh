#!/usr/bin/env bash
# Installs what cdswap's tests and demo need on a fresh Debian machine, or says what is
# missing. As root it installs Debian's qemu-system-x86 (real QEMU for the QMP tests and the
# simulated guests) and xenstore-utils (the C libxenstore clients the tests point at our
# xenstored); it builds the pinned Go tools once into a cache folder:
#   --temporal  the Temporal CLI (its dev server); prints the binary's path
#   --lint      golangci-lint and deadcode, for make lint
#   --cluster   also installs Debian's postgresql and docker-compose (which only validates
#               docker-compose.temporal.yml here) and builds the Temporal server, its SQL
#               schema tool and the Web UI server, for `make cluster`
# Versions come from internal/versions/versions.env. With CI=true anything missing is an
# error, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../internal/versions/versions.env
source internal/versions/versions.env

CACHE=${CDSWAP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cdswap}
TEMPORAL_BIN="$CACHE/bin/temporal-$TEMPORAL_CLI_VERSION/temporal"
SERVER_DIR="$CACHE/bin/temporal-server-$TEMPORAL_SERVER_VERSION"
UI_DIR="$CACHE/bin/ui-server-$TEMPORAL_UI_VERSION"
want_temporal=0 want_lint=0 want_cluster=0
for arg in "$@"; do
  case $arg in
    --temporal) want_temporal=1 ;;
    --lint) want_lint=1 ;;
    --cluster) want_cluster=1 ;;
    *) echo "deps: unknown option $arg (use --temporal, --lint, --cluster)" >&2; exit 2 ;;
  esac
done

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v xenstore-read >/dev/null || missing+=(xenstore-utils)
if [ $want_cluster = 1 ]; then
  [ -x "/usr/lib/postgresql/$POSTGRESQL_VERSION/bin/postgres" ] || missing+=(postgresql)
  command -v docker-compose >/dev/null || missing+=(docker-compose)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "deps: installing ${missing[*]} from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: run as root: apt-get install ${missing[*]}" >&2
    [ "${CI:-}" = true ] && exit 1
  fi
fi

# go_tool NAME VERSION PACKAGE: builds PACKAGE@VERSION once into $CACHE/bin/NAME-VERSION/,
# from outside our module, so its requirements never mix with ours (the Temporal server
# cannot share a module with SDK v1.51.0).
go_tool() {
  local name=$1 version=$2 pkg=$3 dir="$CACHE/bin/$1-$2"
  [ -x "$dir/$(basename "${pkg%%@*}")" ] && return 0
  echo "deps: building $name $version into $dir (once)" >&2
  mkdir -p "$dir"
  (cd "$(mktemp -d)" && GOFLAGS= GOBIN="$dir" go install "$pkg@$version")
}

if [ $want_temporal = 1 ]; then
  [ -x "$TEMPORAL_BIN" ] || echo "deps: the Temporal CLI takes about 4 minutes to build on 2 cores" >&2
  go_tool temporal "$TEMPORAL_CLI_VERSION" github.com/temporalio/cli/cmd/temporal
fi
if [ $want_lint = 1 ]; then
  go_tool golangci-lint "$GOLANGCI_LINT_VERSION" github.com/golangci/golangci-lint/v2/cmd/golangci-lint
  go_tool deadcode "$DEADCODE_VERSION" golang.org/x/tools/cmd/deadcode
fi
# goinstall BINDIR PACKAGE@VERSION NAME builds a tool from its own go.mod, outside our module
# (the server cannot share a module with SDK v1.51.0), into BINDIR/NAME.
goinstall() {
  local dir=$1 pkg=$2 name=$3 tmp
  tmp=$(mktemp -d)
  (cd "$tmp" && GOFLAGS= GOBIN="$tmp/bin" go install "$pkg")
  mkdir -p "$dir"
  mv "$tmp/bin/$(basename "${pkg%@*}")" "$dir/$name"
  rm -rf "$tmp"
}
if [ $want_cluster = 1 ]; then
  if [ ! -x "$SERVER_DIR/server" ] || [ ! -x "$SERVER_DIR/sql" ]; then
    echo "deps: building the Temporal server $TEMPORAL_SERVER_VERSION and its SQL tool into $SERVER_DIR (once; about 10 minutes on 2 cores)"
    goinstall "$SERVER_DIR" "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION" server
    goinstall "$SERVER_DIR" "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION" sql
  fi
  if [ ! -x "$UI_DIR/ui-server" ]; then
    echo "deps: building the Temporal Web UI server $TEMPORAL_UI_VERSION into $UI_DIR (once; about a minute)"
    goinstall "$UI_DIR" "github.com/temporalio/ui-server/v2/cmd/server@$TEMPORAL_UI_VERSION" ui-server
  fi
fi
if [ $want_temporal = 1 ]; then
  echo "$TEMPORAL_BIN"
fi
