# meshguard — the two commands a newcomer needs:
#   make demo   installs what is needed (wasm target, pinned Envoy) and runs the demo
#   make test   runs every test (lints, unit tests, end-to-end tests through a real Envoy)
# `.ci/run` runs `make test`.

CARGO ?= cargo
WASM := target/wasm32-wasip1/release/meshguard.wasm

.PHONY: setup wasm demo up test test-wasm lint unit bench clean

setup:
	@scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 -p meshguard-filter -p meshguard-noop-filter

demo: wasm
	$(CARGO) run --quiet -p meshguard-harness -- demo

up: wasm
	$(CARGO) run --quiet -p meshguard-harness -- up

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p meshguard-filter --target wasm32-wasip1 -- -D warnings

test: wasm lint
	$(CARGO) test --workspace
	$(MAKE) test-wasm

# The policy's unit tests (JWT verification included) compiled to wasm32-wasip1, the target
# meshguard.wasm ships for, and run under Node's WASI: the shipped code decides like the tested
# code. A test that fails there fails here.
test-wasm: setup
	CARGO_TARGET_WASM32_WASIP1_RUNNER="node $(CURDIR)/scripts/wasi-test-runner.mjs" \
		$(CARGO) test -p meshguard-policy --lib --target wasm32-wasip1

bench: wasm
	$(CARGO) run --release --quiet -p meshguard-harness -- bench

clean:
	$(CARGO) clean
