//! Constrained decoding over a small byte-level vocabulary: whatever the logits say,
//! the masked samples spell output that matches the grammar, and it ends exactly when
//! the grammar is complete.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::gguf_file::Value as Gguf;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use super::*;
use crate::model::tokenizer::ModelTokenizer;

/// Printable ASCII, a space, a few multi-byte pieces, and `<|im_end|>` as eos.
fn tokenizer() -> Arc<ModelTokenizer> {
    let mut tokens: Vec<String> = ('!'..='~').map(String::from).collect();
    tokens.extend(
        [
            "Ġ",
            "{\"",
            "\":",
            "true",
            "false",
            "null",
            "ĠĠ",
            "Ċ",
            "<|im_end|>",
        ]
        .map(String::from),
    );
    let types = tokens
        .iter()
        .map(|t| Gguf::I32(if t.starts_with("<|") { 3 } else { 1 }))
        .collect();
    let eos = tokens.len() as u32 - 1;
    let meta = HashMap::from([
        (
            "tokenizer.ggml.model".to_string(),
            Gguf::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Gguf::String("qwen2".into()),
        ),
        (
            "tokenizer.ggml.tokens".into(),
            Gguf::Array(tokens.into_iter().map(Gguf::String).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), Gguf::Array(types)),
        ("tokenizer.ggml.merges".into(), Gguf::Array(Vec::new())),
        ("tokenizer.ggml.eos_token_id".into(), Gguf::U32(eos)),
    ]);
    Arc::new(ModelTokenizer::from_gguf(&meta).unwrap())
}

/// Samples up to `max` tokens from random logits under `spec`; returns the text and
/// whether it ended (eos, or the grammar completed).
fn generate(spec: &GrammarSpec, seed: u64, max: usize) -> (String, bool) {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(tok.clone());
    let mut c = compiler.compile(spec).expect("compiles");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut out = Vec::new();
    for _ in 0..max {
        let mut logits: Vec<f32> = (0..tok.vocab_size() + 3)
            .map(|_| (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32 * 8.0)
            .collect();
        c.apply(&mut logits, &tok.eog_ids)
            .expect("a token is allowed");
        let id = crate::engine::sampler::argmax(&logits);
        assert!((id as usize) < tok.vocab_size(), "padding ids stay masked");
        if tok.eog_ids.contains(&id) {
            return (String::from_utf8(out).unwrap(), true);
        }
        c.commit(id).expect("an allowed token commits");
        out.extend_from_slice(tok.token_bytes(id));
        if c.is_finished() {
            return (String::from_utf8(out).unwrap(), true);
        }
    }
    (String::from_utf8(out).unwrap(), false)
}

#[test]
fn json_schema_output_always_parses_and_validates() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6},
            "ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 0, "maximum": 99}
        },
        "required": ["name", "ok", "n"],
        "additionalProperties": false
    });
    let spec = GrammarSpec::JsonSchema(schema);
    for seed in 0..20 {
        let (text, ended) = generate(&spec, seed, 200);
        assert!(ended, "seed {seed}: did not finish: {text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert!(
            v["name"].as_str().is_some_and(|s| s.chars().count() <= 6),
            "{text}"
        );
        assert!(v["ok"].is_boolean(), "{text}");
        assert!(
            v["n"].as_i64().is_some_and(|n| (0..=99).contains(&n)),
            "{text}"
        );
        assert_eq!(v.as_object().unwrap().len(), 3, "{text}");
        assert!(!text.contains('\n'), "compact layout: {text}");
    }
}

#[test]
fn regex_and_choice_and_lark_constrain_the_text() {
    for seed in 0..10 {
        let (t, ended) = generate(&GrammarSpec::Regex("[a-c]{2,4}-[0-9]".into()), seed, 50);
        assert!(ended, "{t}");
        let (head, tail) = t.split_once('-').expect("dash");
        assert!((2..=4).contains(&head.len()) && head.chars().all(|c| "abc".contains(c)));
        assert!(
            tail.len() == 1 && tail.chars().all(|c| c.is_ascii_digit()),
            "{t}"
        );

        let choices = vec!["yes".to_string(), "no".into(), "maybe so".into()];
        let (t, ended) = generate(&GrammarSpec::Choice(choices.clone()), seed, 50);
        assert!(ended && choices.contains(&t), "{t}");

        let lark = "start: \"(\" num (\",\" num)* \")\"\nnum: /[1-9][0-9]?/\n";
        let (t, ended) = generate(&GrammarSpec::Lark(lark.into()), seed, 200);
        assert!(!ended || (t.starts_with('(') && t.ends_with(')')), "{t}");
    }
}

#[test]
fn json_object_is_any_object_and_eos_waits_for_the_closing_brace() {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(tok.clone());
    let mut c = compiler.compile(&GrammarSpec::JsonObject).unwrap();
    let eos = tok.eos_id.unwrap();
    // Only eos is hot: it must stay masked until an object is complete.
    let mut logits = vec![0.0f32; tok.vocab_size()];
    logits[eos as usize] = 50.0;
    c.apply(&mut logits, &tok.eog_ids).unwrap();
    assert_eq!(logits[eos as usize], f32::NEG_INFINITY);
    for piece in ["{", "}"] {
        c.commit(tok.token_id(piece).unwrap()).unwrap();
    }
    assert!(
        c.is_finished() || {
            let mut l = vec![0.0f32; tok.vocab_size()];
            l[eos as usize] = 50.0;
            c.apply(&mut l, &tok.eog_ids).unwrap();
            crate::engine::sampler::argmax(&l) == eos
        }
    );
}

#[test]
fn a_forked_grammar_starts_fresh_and_bad_grammars_are_errors() {
    let tok = tokenizer();
    let compiler = GrammarCompiler::new(tok.clone());
    let template =
        CompiledGrammar::new(compiler.compile(&GrammarSpec::Regex("ab".into())).unwrap());
    let mut a = template.fork();
    a.commit(tok.token_id("a").unwrap()).unwrap();
    let mut b = template.fork();
    assert!(
        b.commit(tok.token_id("b").unwrap()).is_err(),
        "b starts at the start"
    );
    a.commit(tok.token_id("b").unwrap()).unwrap();

    for bad in [
        GrammarSpec::Lark("start: undefined_rule\n".into()),
        GrammarSpec::JsonSchema(json!({"type": "no-such-type"})),
        GrammarSpec::Regex("(".into()),
    ] {
        match compiler.compile(&bad) {
            Err(CompileError::Invalid(msg)) => assert!(!msg.is_empty()),
            other => panic!("{bad:?}: expected Invalid, got {other:?}"),
        }
    }
}
