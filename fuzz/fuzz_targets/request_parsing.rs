//! Fuzz target: arbitrary bytes as a `/v1/chat/completions` and a `/v1/completions`
//! body through ferrite's parsing and validation (`ferrite::api::check`). The checks
//! live in `fuzz/harness/request_parsing.rs`, which `tests/request_parsing_corpus.rs`
//! also runs over the seed corpus in the normal test command.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/request_parsing.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::run(data));
