//! The `request_parsing` fuzz target's body (`fuzz/harness/request_parsing.rs`) in the
//! normal test command, where cargo-fuzz (a nightly-flag build of the whole dependency
//! tree) would cost minutes: it runs over the seed corpus `fuzz/seeds/request_parsing/`,
//! over every input the fuzzer has saved in `fuzz/corpus/request_parsing/` (if any),
//! and over about 60,000 deterministic mutations of the seeds (byte flips, cuts,
//! splices, inserted tokens), all in-process with no model. The real fuzzer:
//! `fuzz/run.sh [SECONDS]` (see fuzz/README.md).
//!
//! Also: a body built to make the error path's field search quadratic (tens of
//! thousands of keys and one bad value) is answered within a second.

#[path = "../fuzz/harness/request_parsing.rs"]
mod harness;

use std::path::PathBuf;
use std::time::{Duration, Instant};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut out = Vec::new();
    for dir in ["seeds/request_parsing", "corpus/request_parsing"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            let bytes = std::fs::read(e.path()).expect("reading a corpus file");
            out.push((e.path().display().to_string(), bytes));
        }
    }
    out.sort();
    out
}

/// xorshift64*: a fixed, dependency-free stream of mutation choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens worth splicing into JSON.
const TOKENS: &[&[u8]] = &[
    b"null",
    b"true",
    b"-1",
    b"0",
    b"1e999",
    b"18446744073709551616",
    b"\"\"",
    b"[]",
    b"{}",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b",",
    b":",
    b"\"messages\"",
    b"\"prompt\"",
    b"\"n\"",
    b"\"max_tokens\"",
    b"\"stop\"",
    b"\"role\"",
    b"\"content\"",
    b"[[",
    b"]]",
    b"\xff",
];

fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(b.len() + 1);
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = at.min(b.len() - 1);
                b[i] = rng.next() as u8;
            }
            1 => b.truncate(at),
            2 => {
                let tok = TOKENS[rng.below(TOKENS.len())];
                b.splice(at..at, tok.iter().copied());
            }
            3 if !b.is_empty() => {
                let end = (at + rng.below(16)).min(b.len());
                b.drain(at.min(end)..end);
            }
            _ => {
                let from = rng.below(other.len() + 1);
                let to = (from + rng.below(64)).min(other.len());
                b.splice(at..at, other[from..to].iter().copied());
            }
        }
    }
    b
}

#[test]
fn fuzz_harness_holds_over_the_corpus_and_its_mutations() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 20,
        "seed corpus missing: {} files",
        corpus.len()
    );
    let t0 = Instant::now();
    for (name, bytes) in &corpus {
        let outcome = std::panic::catch_unwind(|| harness::run(bytes));
        assert!(outcome.is_ok(), "{name} fails the harness");
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut runs = 0;
    let rounds = 60_000usize.div_ceil(corpus.len());
    for round in 0..rounds {
        for (i, (_, seed)) in corpus.iter().enumerate() {
            let other = &corpus[(i + round + 1) % corpus.len()].1;
            let input = mutate(&mut rng, seed, other);
            if std::panic::catch_unwind(|| harness::run(&input)).is_err() {
                panic!(
                    "the harness fails on a mutation of {}: {:?}",
                    corpus[i].0,
                    String::from_utf8_lossy(&input)
                );
            }
            runs += 1;
        }
    }
    println!(
        "{} corpus files and {runs} mutations in {:.1}s",
        corpus.len(),
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn many_keys_with_one_bad_value_is_rejected_quickly() {
    let mut body = String::from("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]");
    for i in 0..50_000 {
        body.push_str(&format!(",\"k{i}\":{i}"));
    }
    body.push_str(",\"n\":\"two\"}");
    let limits = ferrite::api::ApiLimits::default();
    assert!(
        body.len() < limits.max_body_bytes,
        "the body fits the default limit"
    );
    let t0 = Instant::now();
    let err = ferrite::api::check::chat(body.as_bytes(), harness::SERVED, &limits)
        .expect_err("`n` is not a number");
    let took = t0.elapsed();
    assert_eq!(err.status.as_u16(), 400, "{err}");
    assert!(took < Duration::from_secs(1), "rejecting took {took:?}");
}

/// The real fuzzer, opt-in: with `FERRITE_FUZZ_SECS=N` this runs `fuzz/run.sh N`
/// (cargo-fuzz must be installed; its first build takes minutes) and fails on a crash.
#[test]
fn cargo_fuzz_run_when_asked() {
    let Some(secs) = std::env::var("FERRITE_FUZZ_SECS")
        .ok()
        .filter(|s| !s.is_empty())
    else {
        println!("FERRITE_FUZZ_SECS not set: skipping the cargo-fuzz run (fuzz/run.sh)");
        return;
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/run.sh");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&secs)
        .status()
        .expect("running fuzz/run.sh");
    assert!(
        status.success(),
        "fuzz/run.sh {secs} failed ({status}): see fuzz/artifacts/"
    );
}
