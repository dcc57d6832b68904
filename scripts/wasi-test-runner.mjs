// Runs a wasm32-wasip1 test binary (what `cargo test --target wasm32-wasip1` builds) under
// Node's WASI, so that the policy's unit tests also run compiled to the target meshguard.wasm
// ships for. Cargo calls it as the target's runner: `node wasi-test-runner.mjs FILE.wasm ARGS...`.
// Exit status: the test binary's. A panic aborts (a wasm trap): Node exits non-zero.
import { readFile } from 'node:fs/promises';
import { WASI } from 'node:wasi';
import process from 'node:process';

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error('usage: node wasi-test-runner.mjs FILE.wasm [ARGS...]');
  process.exit(2);
}
const wasi = new WASI({ version: 'preview1', args: [file, ...args], env: { RUST_BACKTRACE: '0' }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: wasi.wasiImport });
process.exitCode = wasi.start(instance);
