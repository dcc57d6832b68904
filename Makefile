# meshguard — the two commands a newcomer needs:
#   make demo   installs what is needed (wasm target, pinned Envoy) and runs the demo
#   make test   runs every test (lints, unit tests, end-to-end tests through a real Envoy)
# `.ci/run` runs `make test`.

CARGO ?= cargo
WASM := target/wasm32-wasip1/release/meshguard.wasm

.PHONY: setup wasm demo up test test-wasm lint unit bench alerts fuzz clean

setup:
	@scripts/setup.sh

wasm: setup
	$(CARGO) build --release --target wasm32-wasip1 -p meshguard-filter -p meshguard-noop-filter -p meshguard-probe-filter -p meshguard-trap-filter

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

# The alerting rules and their unit tests (also run by `make test`, harness/tests/monitoring.rs).
alerts: setup
	promtool check rules envoy-config/monitoring/alerts.yaml
	promtool test rules envoy-config/monitoring/alerts_test.yaml envoy-config/monitoring/alerts_week_test.yaml

bench: wasm
	$(CARGO) run --release --quiet -p meshguard-harness -- bench
	$(CARGO) run --release --quiet -p meshguard-harness -- bench --memory

# Fuzzing is not part of `make test`. `make fuzz FUZZ_SECONDS=600` runs every target in
# fuzz/fuzz_targets for that many seconds each, starting from the seeds kept in
# fuzz/corpus/<target>/ (harness/tests/fuzz_corpus.rs generates them) and writing what it
# finds to fuzz/target/corpus/<target>/ (crashes: fuzz/artifacts/<target>/). cargo-fuzz needs
# nightly features: on a stable toolchain RUSTC_BOOTSTRAP=1 enables them. No sanitizer: the
# fuzzed crates are safe Rust (policy forbids unsafe code), and AddressSanitizer's malloc
# hooks cost 2-3x the executions per second (see fuzz/README.md).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
FUZZ_FLAGS ?= --sanitizer none

fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	@set -e; cd fuzz; for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/corpus/$$t; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s"; \
	  rc=0; RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run $(FUZZ_FLAGS) $$t target/corpus/$$t corpus/$$t -- \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 > target/fuzz-$$t.log 2>&1 || rc=$$?; \
	  grep -E '^(stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)|INFO: seed corpus|Done)|panicked|ERROR' target/fuzz-$$t.log || true; \
	  test $$rc -eq 0 || { tail -30 target/fuzz-$$t.log; echo "fuzz $$t FAILED: see fuzz/target/fuzz-$$t.log and fuzz/artifacts/$$t/"; exit 1; }; \
	done

clean:
	$(CARGO) clean
