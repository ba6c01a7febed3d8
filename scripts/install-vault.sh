#!/usr/bin/env bash
# install-vault.sh: print the path of a Vault binary usable as a development
# and test host, building Vault v1.21.0 from the Go module proxy when no
# `vault` is on PATH and no cached build exists.
#
# Vault 1.15+ is under the Business Source License: this script only builds it
# as a local test host into a cache outside the checkout; the project never
# vendors or ships Vault's code.
#
# Environment:
#   VAULT_BIN          use this binary, skip everything else
#   NEBULA_VAULT_CACHE cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/nebula-credential)
#   VAULT_VERSION      version to build (default v1.21.0, see DESIGN.md)
set -euo pipefail

if [[ -n "${VAULT_BIN:-}" ]]; then
  echo "$VAULT_BIN"
  exit 0
fi
if command -v vault >/dev/null 2>&1; then
  command -v vault
  exit 0
fi

version="${VAULT_VERSION:-v1.21.0}"
cache="${NEBULA_VAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-credential}"
bin="$cache/vault-${version#v}"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$cache"
lock="$cache/.vault-build.lock"
exec 9>"$lock"
flock 9
if [[ -x "$bin" ]]; then # built by a concurrent caller while we waited
  echo "$bin"
  exit 0
fi

echo "install-vault: building Vault $version from the Go module proxy (about 10 minutes of CPU)" >&2
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
src="$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "github.com/hashicorp/vault@$version" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
if [[ -z "$src" || ! -d "$src" ]]; then
  echo "install-vault: could not download github.com/hashicorp/vault@$version" >&2
  exit 1
fi
cp -r "$src" "$work/vault"
chmod -R u+w "$work/vault"
cd "$work/vault"
# The module replaces its own api, api/auth/* and sdk submodules with local
# directories; the published module builds only against the released ones.
for path in $(go mod edit -json | sed -n 's/^[[:space:]]*"Path": "\(github.com\/hashicorp\/vault\/\(api\|sdk\)[^"]*\)".*/\1/p' | sort -u); do
  go mod edit -dropreplace="$path"
done
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
echo "install-vault: built $bin" >&2
echo "$bin"
