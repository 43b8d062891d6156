//! Which tokens end generation. A GGUF names `eos` (and sometimes `eot` / `eom`), but
//! chat models end their turns with other tokens too: Qwen's `<|im_end|>` while its eos
//! is `<|endoftext|>`, Llama 3's `<|eot_id|>` and `<|eom_id|>`, Gemma's
//! `<end_of_turn>`, Phi-3's `<|end|>`. Like llama.cpp, every token whose text is a
//! known end-of-turn marker, plus the declared ids and the fill-in-the-middle pad /
//! repository / file separators (a code model emitting one is done), stops a sequence.

use super::meta::Meta;

/// Token texts that end a turn in the families we know.
pub const EOG_TEXTS: [&str; 19] = [
    "<|eot_id|>",
    "<|eom_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "</s>",
];

/// Fill-in-the-middle tokens that also end generation.
const FIM_END_TEXTS: [&str; 4] = [
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
    "<|fim_repo|>",
];

/// Whether `text` is a known end-of-generation token text.
pub fn is_eog_text(text: &str) -> bool {
    EOG_TEXTS.contains(&text) || FIM_END_TEXTS.contains(&text)
}

/// Sorted, deduplicated ids of every end-of-generation token.
pub fn eog_ids(tokens: &[String], meta: &Meta, eos: Option<u32>) -> Vec<u32> {
    let n = tokens.len() as u32;
    let mut ids: Vec<u32> = eos.into_iter().collect();
    ids.extend(meta.u32_opt("tokenizer.ggml.eot_token_id"));
    ids.extend(meta.u32_opt("tokenizer.ggml.eom_token_id"));
    ids.retain(|&i| i < n);
    for (i, t) in tokens.iter().enumerate() {
        if is_eog_text(t) {
            ids.push(i as u32);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}
