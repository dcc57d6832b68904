# meshguard — the two commands a newcomer needs:
#   make demo   installs what is needed (wasm target, pinned Envoy) and runs the demo
#   make test   runs every test (lints, unit tests, end-to-end tests through a real Envoy)
# `.ci/run` runs `make test`.

CARGO ?= cargo
WASM := target/wasm32-wasip1/release/meshguard.wasm

.PHONY: setup wasm demo up test lint unit bench clean

setup:
	@scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 -p meshguard-filter -p meshguard-noop-filter -p meshguard-probe-filter

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

bench: wasm
	$(CARGO) run --release --quiet -p meshguard-harness -- bench
	$(CARGO) run --release --quiet -p meshguard-harness -- bench --memory

clean:
	$(CARGO) clean
