#!/usr/bin/env bash
# dev.sh: build the plugin, start a Vault dev server on loopback with the
# plugin registered (versioned, with its SHA-256) and mounted at nebula/,
# print the environment to reach it, and run until Ctrl-C, then stop Vault.
#
# Environment:
#   VAULT_DEV_PORT        listen port (default 8200); Vault's cluster listener
#                         takes the next port
#   VAULT_DEV_ROOT_TOKEN  root token (default "root")
#   NEBULA_MOUNT          mount path (default "nebula")
#   VERSION               plugin version, a semantic version (default: from
#                         git describe, see the Makefile; else v0.1.0-dev)
#   VAULT_BIN             Vault binary to use (default: scripts/install-vault.sh)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

port="${VAULT_DEV_PORT:-8200}"
token="${VAULT_DEV_ROOT_TOKEN:-root}"
mount="${NEBULA_MOUNT:-nebula}"
plugin="nebula-credential-plugin"
plugin_dir="$root/bin/plugins"
log="$root/bin/vault-dev.log"

# semver_version prints VERSION, or one derived from git describe: a tag
# such as v1.2.3[-4-gabcdef][-dirty] as it is, anything else (a bare commit
# hash) as build metadata of v0.1.0-dev, since Vault takes only semantic
# versions.
semver_version() {
  if [[ -n "${VERSION:-}" ]]; then
    echo "$VERSION"
    return
  fi
  local described
  described="$(git describe --tags --always --dirty 2>/dev/null || true)"
  if [[ "$described" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
    echo "$described"
  elif [[ -n "$described" ]]; then
    echo "v0.1.0-dev+$described"
  else
    echo "v0.1.0-dev"
  fi
}
version="$(semver_version)"

log_info() { echo "dev.sh: $*" >&2; }

mkdir -p "$plugin_dir"
log_info "building $plugin $version into $plugin_dir"
go build -ldflags "-X main.version=$version" -o "$plugin_dir/$plugin" "./cmd/$plugin"
sha="$(sha256sum "$plugin_dir/$plugin" | cut -d' ' -f1)"

vault_bin="${VAULT_BIN:-$(scripts/install-vault.sh)}"
log_info "using $vault_bin ($("$vault_bin" version))"

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  log_info "127.0.0.1:$port is in use; set VAULT_DEV_PORT to another port"
  exit 1
fi

# The CLI talks to this server only, and never reads or writes a token
# helper file.
unset VAULT_NAMESPACE VAULT_CACERT VAULT_CAPATH VAULT_CLIENT_CERT VAULT_CLIENT_KEY
export VAULT_ADDR="http://127.0.0.1:$port"
export VAULT_TOKEN="$token"

"$vault_bin" server -dev \
  -dev-listen-address="127.0.0.1:$port" \
  -dev-root-token-id="$token" \
  -dev-no-store-token \
  -dev-plugin-dir="$plugin_dir" >"$log" 2>&1 &
vault_pid=$!

stop_vault() {
  trap - INT TERM EXIT
  if kill -0 "$vault_pid" 2>/dev/null; then
    log_info "stopping Vault (pid $vault_pid)"
    kill -TERM "$vault_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$vault_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$vault_pid" 2>/dev/null || true
    wait "$vault_pid" 2>/dev/null || true
  fi
}
trap 'stop_vault; exit 130' INT
trap 'stop_vault; exit 143' TERM
trap stop_vault EXIT

log_info "waiting for Vault at $VAULT_ADDR (log: $log)"
for i in $(seq 1 600); do
  if "$vault_bin" status >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$vault_pid" 2>/dev/null || [[ $i == 600 ]]; then
    log_info "Vault did not come up:"
    cat "$log" >&2
    exit 1
  fi
  sleep 0.1
done

"$vault_bin" plugin register -sha256="$sha" -version="$version" secret "$plugin" >&2
"$vault_bin" secrets enable -path="$mount" -plugin-version="$version" "$plugin" >&2

cat <<EOF
# Vault dev server with $plugin $version mounted at $mount/ (log: $log).
export VAULT_ADDR=$VAULT_ADDR
export VAULT_TOKEN=$VAULT_TOKEN
# Press Ctrl-C to stop.
EOF

# Run until Vault exits or a signal arrives (wait returns early on a
# trapped signal, and the trap stops Vault).
wait "$vault_pid"
