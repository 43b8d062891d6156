use super::*;
use gguf_file::Value;

fn strings(v: Vec<String>) -> Value {
    Value::Array(v.into_iter().map(Value::String).collect())
}

/// A SentencePiece-style (`llama`) vocabulary: control tokens, 256 byte tokens,
/// then pieces whose scores rank the merges.
fn spm_metadata() -> HashMap<String, Value> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![TOKEN_TYPE_UNKNOWN, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(TOKEN_TYPE_BYTE);
    }
    for piece in [
        "▁", "h", "e", "l", "o", "w", "r", "d", "ll", "▁h", "▁he", "llo", "▁hello", "▁w", "or",
        "▁wor", "ld", "▁world",
    ] {
        tokens.push(piece.into());
        types.push(TOKEN_TYPE_NORMAL);
    }
    let n = tokens.len();
    let scores: Vec<Value> = (0..n)
        .map(|i| Value::F32(if i < 259 { 0.0 } else { i as f32 }))
        .collect();
    HashMap::from([
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.scores".into(), Value::Array(scores)),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
    ])
}

#[test]
fn sentencepiece_vocab_merges_falls_back_to_bytes_and_adds_bos() {
    let tok = ModelTokenizer::from_gguf(&spm_metadata()).unwrap();
    let id = |p: &str| tok.token_id(p).unwrap();
    assert!(
        tok.add_bos,
        "llama tokenizers add BOS unless the GGUF says otherwise"
    );
    assert_eq!(
        tok.encode("hello world").unwrap(),
        vec![1, id("▁hello"), id("▁world")]
    );
    // "é" is not in the vocabulary: its two UTF-8 bytes become byte tokens.
    let ids = tok.encode("hé").unwrap();
    assert_eq!(ids, vec![1, id("▁h"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids), " hé");
    assert_eq!(tok.eog_ids, vec![2]);
    assert_eq!(
        tok.encode("</s>").unwrap(),
        vec![1, 2],
        "control tokens are special"
    );
    let literal = EncodeOptions {
        add_special: false,
        parse_special: false,
    };
    assert!(
        !tok.encode_with("</s>", literal).unwrap().contains(&2),
        "unparsed control text is plain text"
    );
    // After a special token the text gets SentencePiece's space prefix again.
    assert_eq!(tok.encode("</s>hello").unwrap(), vec![1, 2, id("▁hello")]);
}

#[test]
fn add_bos_and_add_eos_follow_the_file() {
    let mut meta = spm_metadata();
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
    meta.insert("tokenizer.ggml.add_eos_token".into(), Value::Bool(true));
    meta.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(false));
    let tok = ModelTokenizer::from_gguf(&meta).unwrap();
    let id = |p: &str| tok.token_id(p).unwrap();
    assert!(!tok.add_bos && tok.add_eos);
    // No space prefix: "hello" is not "▁hello".
    let ids = tok.encode("hello").unwrap();
    assert_eq!(ids.last(), Some(&2), "{ids:?}");
    assert_ne!(ids[0], 1);
    assert!(!ids.contains(&id("▁hello")));
}

/// A byte-level (`gpt2`) vocabulary shaped like Qwen's: eos is `<|endoftext|>`, the
/// chat turn ends with `<|im_end|>`.
fn qwen_like_metadata() -> HashMap<String, Value> {
    let mut tokens: Vec<String> = ('!'..='~').map(String::from).collect();
    tokens.extend(
        [
            "Ġ",
            "Ċ",
            "<|endoftext|>",
            "<|im_start|>",
            "<|im_end|>",
            "<tool_call>",
        ]
        .map(String::from),
    );
    let types: Vec<Value> = tokens
        .iter()
        .map(|t| {
            Value::I32(match t.as_str() {
                "<tool_call>" => TOKEN_TYPE_USER_DEFINED,
                t if t.starts_with("<|") => TOKEN_TYPE_CONTROL,
                _ => TOKEN_TYPE_NORMAL,
            })
        })
        .collect();
    let eos = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
    HashMap::from([
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String("qwen2".into()),
        ),
        ("tokenizer.ggml.tokens".into(), strings(tokens)),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), Value::Array(Vec::new())),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
    ])
}

#[test]
fn every_end_of_turn_token_ends_generation_not_only_eos() {
    let tok = ModelTokenizer::from_gguf(&qwen_like_metadata()).unwrap();
    let id = |p: &str| tok.token_id(p).unwrap();
    assert_eq!(tok.eos_id, Some(id("<|endoftext|>")));
    assert_eq!(tok.eog_ids, vec![id("<|endoftext|>"), id("<|im_end|>")]);
    assert!(!tok.add_bos, "qwen2 adds no BOS");
    assert!(tok.is_control(id("<|im_end|>")));
    assert!(tok.token_bytes(id("<|im_end|>")).is_empty());
}

#[test]
fn user_defined_tokens_always_match_control_tokens_only_when_parsed() {
    let tok = ModelTokenizer::from_gguf(&qwen_like_metadata()).unwrap();
    let id = |p: &str| tok.token_id(p).unwrap();
    let literal = EncodeOptions {
        add_special: false,
        parse_special: false,
    };
    let ids = tok.encode_with("a<tool_call>b<|im_end|>", literal).unwrap();
    assert!(ids.contains(&id("<tool_call>")), "{ids:?}");
    assert!(!ids.contains(&id("<|im_end|>")), "{ids:?}");
    let ids = tok.encode("a<tool_call> b<|im_end|>").unwrap();
    assert_eq!(
        ids,
        vec![
            id("a"),
            id("<tool_call>"),
            id("Ġ"),
            id("b"),
            id("<|im_end|>")
        ]
    );
    assert_eq!(tok.decode(&ids), "a<tool_call> b");
}

#[test]
fn unknown_pre_tokenizer_falls_back_to_the_default_split() {
    let mut meta = qwen_like_metadata();
    meta.insert(
        "tokenizer.ggml.pre".into(),
        Value::String("no-such-family".into()),
    );
    let tok = ModelTokenizer::from_gguf(&meta).unwrap();
    assert_eq!(tok.decode(&tok.encode("a b!").unwrap()), "a b!");
}

#[test]
fn newline_runs_split_text_at_newline_boundaries() {
    let runs: Vec<&str> = newline_runs("a▁b\n\nc\n").collect();
    assert_eq!(runs, vec!["a▁b", "\n\n", "c", "\n"]);
    assert_eq!(newline_runs("").count(), 0);
}
