//! The parsers that see peer input, run over many generated hostile inputs on stable Rust in
//! every `make test` (the cargo-fuzz targets in `fuzz/` run the same properties for longer).
//! Inputs come from a fixed-seed generator biased towards the bytes these parsers split on.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use policy::fuzzing;
use policy::Policy;

const ROUNDS: usize = 20_000;

/// xorshift64*: deterministic, so a failure reproduces.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Mostly pieces that matter to the parsers, sometimes any byte.
    fn input(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"spiffe://",
            b"cluster.local",
            b"/",
            b"//",
            b".",
            b"..",
            b"%",
            b"%2e",
            b"%2F",
            b"%25",
            b"%00",
            b"?",
            b"#",
            b";",
            b",",
            b"=",
            b"\"",
            b"\\",
            b"URI=",
            b"By=",
            b"ns",
            b"sa",
            b"*",
            b":",
            b"\n",
            b"x-forwarded-client-cert",
            b":path",
            b":authority",
            b"x-request-id",
            b"a",
            b"Z",
            b"0",
            b" ",
            b"\t",
            b"\xff",
            b"\xc3\x28",
            b"{",
            b"}",
            b"[",
            b"]",
            b"\"version\"",
            b"1",
            b"eyJ",
            b"@",
        ];
        let len = self.below(24);
        let mut out = Vec::new();
        for _ in 0..len {
            if self.below(8) == 0 {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[self.below(PIECES.len())]);
            }
        }
        out
    }

    /// Mostly pieces of hosts, authorities and host patterns (IPv4 in every radix, IPv6 with
    /// embedded IPv4 and zones, metadata and localhost names, ports, wildcards), sometimes any
    /// byte; a `\n` splits a pattern from a peer's host.
    fn host_input(&mut self) -> Vec<u8> {
        const PIECES: &[&[u8]] = &[
            b"*.",
            b"\n",
            b".",
            b":",
            b"::",
            b"[",
            b"]",
            b"%25",
            b"%",
            b"eth0",
            b"@",
            b"0",
            b"1",
            b"9",
            b"00",
            b"0x",
            b"0X",
            b"7f",
            b"fF",
            b"127",
            b"255",
            b"256",
            b"4294967295",
            b"4294967296",
            b"169.254",
            b"169",
            b"254",
            b"0251",
            b"0xa9fe",
            b"a9fe",
            b"100.100.100.200",
            b"ffff",
            b"::ffff:",
            b"64:ff9b::",
            b"fd00:ec2::254",
            b"fe80",
            b"localhost",
            b"LocalHost",
            b"metadata",
            b"google.internal",
            b"example.com",
            b"EXAMPLE",
            b"xn--",
            b"a",
            b"-",
            b"_",
            b"443",
            b"65536",
            b" ",
            b",",
            b"/",
            b"\xc3\xa9",
        ];
        let len = self.below(16);
        let mut out = Vec::new();
        if self.below(4) == 0 {
            out.extend_from_slice(b"*.");
        }
        for _ in 0..len {
            if self.below(12) == 0 {
                out.push(self.next() as u8);
            } else {
                out.extend_from_slice(PIECES[self.below(PIECES.len())]);
            }
        }
        out
    }
}

fn run(name: &str, seed: u64, property: impl Fn(&[u8]) -> Result<(), String>) {
    run_inputs(name, seed, Gen::input, property);
}

fn run_inputs(name: &str, seed: u64, input: fn(&mut Gen) -> Vec<u8>, property: impl Fn(&[u8]) -> Result<(), String>) {
    let mut gen = Gen(seed);
    for i in 0..ROUNDS {
        let input = input(&mut gen);
        if let Err(e) = property(&input) {
            panic!("{name}, round {i}: {e}\ninput: {:?}", String::from_utf8_lossy(&input));
        }
    }
}

#[test]
fn spiffe_ids() {
    run("spiffe_id", 0x5eed_0001, fuzzing::spiffe_id);
}

#[test]
fn xfcc_headers() {
    run("xfcc", 0x5eed_0002, fuzzing::xfcc);
}

#[test]
fn canonical_paths() {
    run("canonical_path", 0x5eed_0003, fuzzing::canonical_path);
    // The last one was found by the canonical_path fuzz target.
    for known in [&b"/a/./b/../../.."[..], b"", b"%2e%2E/%2e", b"/.%2e/x", b"//%2f//", b"/a?b#c", b"%%4%4440%"] {
        fuzzing::canonical_path(known).unwrap();
    }
}

#[test]
fn hosts() {
    run_inputs("host", 0x5eed_0005, Gen::host_input, fuzzing::host);
    run("host (generic input)", 0x5eed_0006, fuzzing::host);
    for known in [
        &b"API.Example.COM.:443"[..],
        b"*.example.com\na.b.example.com",
        b"*.example.com\nexample.com",
        b"*.localhost\na.localhost",
        b"*.google.internal\nmetadata.google.internal",
        b"0x7f.1",
        b"0251.0376.0251.0376",
        b"[::ffff:169.254.169.254]:80",
        b"[::ffff:a9fe:a9fe]",
        b"[64:ff9b::a9fe:a9fe]",
        b"[::a9fe:a9fe]",
        b"[fd00:ec2::254%25eth0]",
        b"fd00:ec2::254\n[FD00:0EC2:0::254]",
        b"10.0.0.1\n012.0.0.1",
        b"[::1]\n[::0.0.0.1]",
        b"metadata\nMETADATA.",
    ] {
        fuzzing::host(known).unwrap();
    }
}

#[test]
fn policy_documents() {
    run("policy_document", 0x5eed_0004, fuzzing::policy_document);
}

#[test]
fn evaluation_of_hostile_requests() {
    let policies = [
        Policy::from_json(
            br#"{"version":1,"decisionLog":{"allowSampleRate":1},"identity":{"trustDomains":["cluster.local"],"rules":[
            {"id":"d","action":"deny","match":{"paths":[{"prefix":"/admin"}]},"principals":["spiffe://cluster.local/ns/*/sa/*"]},
            {"id":"a","action":"allow","match":{"hosts":["*.svc"],"paths":[{"regex":"^/v[0-9]+/"}],"methods":["GET"]},"principals":["*"]}]}}"#,
        )
        .unwrap(),
        Policy::from_json(br#"{"version":1,"mode":"dry-run","identity":{"source":"xfcc","defaultAction":"deny"}}"#).unwrap(),
    ];
    for (i, policy) in policies.iter().enumerate() {
        run(&format!("evaluate with policy {i}"), 0x5eed_0010 + i as u64, |d| fuzzing::evaluate(policy, d));
    }
}
