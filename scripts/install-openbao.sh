#!/usr/bin/env bash
# install-openbao.sh: print the path of an OpenBao server binary usable as a
# test host, building OpenBao v2.6.2 from its source archive when no `bao`
# is on PATH and no cached build exists.
#
# The Go module proxy does not serve the OpenBao server module at its v2
# tags, so the build starts from a source archive (shared/openbao/ beside
# the checkout: openbao-2.6.2-src.tar.gz, checked against its SHA-256). The
# archive leaves out five cloud auto-unseal wrappers the proxy refuses;
# nothing a secrets engine sees changes.
#
# Environment:
#   OPENBAO_BIN          use this binary, skip everything else
#   OPENBAO_SRC_ARCHIVE  the source archive (default: ../shared/openbao/ beside
#                        the checkout, then /work/shared/openbao/)
#   NEBULA_VAULT_CACHE   cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/nebula-credential)
set -euo pipefail

if [[ -n "${OPENBAO_BIN:-}" ]]; then
  echo "$OPENBAO_BIN"
  exit 0
fi
if command -v bao >/dev/null 2>&1; then
  command -v bao
  exit 0
fi

version="2.6.2"
want_sha="075251618e6182a8d4b13935aa6e153460504750c569dd8c684eec489dc1c071"
cache="${NEBULA_VAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nebula-credential}"
bin="$cache/bao-$version"
if [[ -x "$bin" ]]; then
  echo "$bin"
  exit 0
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
archive="${OPENBAO_SRC_ARCHIVE:-}"
if [[ -z "$archive" ]]; then
  for candidate in "$root/../shared/openbao/openbao-$version-src.tar.gz" "/work/shared/openbao/openbao-$version-src.tar.gz"; do
    if [[ -f "$candidate" ]]; then
      archive="$candidate"
      break
    fi
  done
fi
if [[ -z "$archive" || ! -f "$archive" ]]; then
  echo "install-openbao: no bao on PATH and no source archive openbao-$version-src.tar.gz (set OPENBAO_SRC_ARCHIVE)" >&2
  exit 1
fi
got_sha="$(sha256sum "$archive" | cut -d' ' -f1)"
if [[ "$got_sha" != "$want_sha" ]]; then
  echo "install-openbao: $archive has sha256 $got_sha, want $want_sha" >&2
  exit 1
fi

mkdir -p "$cache"
exec 9>"$cache/.openbao-build.lock"
flock 9
if [[ -x "$bin" ]]; then # built by a concurrent caller while we waited
  echo "$bin"
  exit 0
fi

echo "install-openbao: building OpenBao $version from $archive (a few minutes of CPU)" >&2
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
tar -xzf "$archive" -C "$work"
src="$(find "$work" -maxdepth 1 -mindepth 1 -type d | head -n1)"
cd "$src"
GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath \
  -ldflags "-X github.com/openbao/openbao/version.fullVersion=$version" -o "$bin.tmp" .
mv "$bin.tmp" "$bin"
echo "install-openbao: built $bin" >&2
echo "$bin"
