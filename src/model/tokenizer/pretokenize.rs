//! Pre-tokenizers of byte-level BPE vocabularies, chosen by `tokenizer.ggml.pre`.
//!
//! Each family splits text into words with an ordered list of regexes before BPE runs
//! on each word: the first regex splits the text, the next splits each piece again, and
//! so on; matches and the gaps between them both become pieces (the `Isolated`
//! behaviour). The patterns are the ones each family's `tokenizer.json` declares, in the
//! form llama.cpp uses (case-insensitive contractions spelled `'[sS]`, …) so that ids
//! match llama.cpp's. Unknown names fall back to the `default` split with a warning.

/// GPT-2's split (also Phi-2, MPT, OLMo, Jais…): contractions, letters, digits, other
/// symbols each with an optional leading space, then whitespace.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama 3's split: digits in groups of up to three, symbols absorb trailing newlines.
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 2's split: Llama 3's, but every digit alone.
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen 3.5's split: Qwen 2's with combining marks kept on their letters.
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GPT-4o's (o200k) split: words split at case changes, contractions attached.
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Mistral's Tekken split: GPT-4o's without contractions, digits alone.
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// DeepSeek V3's main split (after digits and CJK runs are cut out).
const DEEPSEEK3: &str = r##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##;

/// Seed-Coder's split.
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Bailing MoE's split.
const BAILING: &str = r"'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+";

/// Latin and other cased letters DeepSeek LLM keeps together in words (escaped, so
/// that no editor's Unicode normalisation can reorder a range).
const DEEPSEEK_LLM_LETTERS: &str = r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+";

/// How one family pre-tokenizes.
#[derive(Debug, Clone, PartialEq)]
pub struct PreTokenizer {
    /// The family name it was resolved to (for logs).
    pub family: &'static str,
    /// Regexes applied in order (see the module doc).
    pub regexes: Vec<&'static str>,
    /// A word that is itself a vocabulary token is emitted whole, without merging.
    pub ignore_merges: bool,
    /// The family always adds BOS unless the file says otherwise.
    pub add_bos: bool,
}

fn spec(family: &'static str, regexes: &[&'static str]) -> PreTokenizer {
    PreTokenizer {
        family,
        regexes: regexes.to_vec(),
        ignore_merges: false,
        add_bos: false,
    }
}

/// The pre-tokenizer for `tokenizer.ggml.pre` = `name`, or `None` when the name is not
/// known (the caller warns and uses [`default_pre_tokenizer`]).
pub fn pre_tokenizer(name: &str) -> Option<PreTokenizer> {
    let llama3 = |family| PreTokenizer {
        ignore_merges: true,
        add_bos: true,
        ..spec(family, &[LLAMA3])
    };
    Some(match name {
        "default" => default_pre_tokenizer(),
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" => llama3("llama3"),
        "dbrx" | "smaug-bpe" => spec("llama3", &[LLAMA3]),
        "chatglm-bpe" => spec("chatglm4", &[LLAMA3]),
        "glm4" | "glm5" => PreTokenizer {
            ignore_merges: true,
            ..spec("chatglm4", &[LLAMA3])
        },
        "deepseek-llm" => spec(
            "deepseek-llm",
            &[
                r"[\r\n]",
                DEEPSEEK_LLM_LETTERS,
                r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
                r"\s+$",
                r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
                r"\p{N}+",
            ],
        ),
        "deepseek-coder" => spec(
            "deepseek-coder",
            &[
                r"[\r\n]",
                r"\s?\p{L}+",
                r"\s?\p{P}+",
                r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
                r"\p{N}",
            ],
        ),
        "deepseek-v3" | "hunyuan-dense" | "joyai-llm" | "hy_v4" => spec(
            "deepseek-v3",
            &[r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+", DEEPSEEK3],
        ),
        "falcon" => spec(
            "falcon",
            &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
        ),
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => spec("starcoder", &[r"\p{N}", GPT2]),
        "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling"
        | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" | "a.x-4.0"
        | "mellum" | "modern-bert" | "exaone4" | "jina-v1-en" | "jina-v2-code" | "roberta-bpe" => {
            spec("gpt-2", &[GPT2])
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan" | "megrez"
        | "solar-open" => spec("qwen2", &[QWEN2]),
        "qwen35" => spec("qwen35", &[QWEN35]),
        "grok-2" => spec("grok-2", &[QWEN2]),
        "poro-chat" | "bloom" | "gpt3-finnish" => spec("bloom", &[r" ?[^(\s|.,!?…。，、।۔،)]+"]),
        "viking" => spec("viking", &[r" ?[^(\s|.,!?…。，、।۔،)]+", r"\p{N}"]),
        "tekken" => PreTokenizer {
            ignore_merges: true,
            add_bos: true,
            ..spec("tekken", &[TEKKEN])
        },
        "gpt-4o" | "llama4" | "kanana2" | "minimax-m2" => spec("gpt-4o", &[GPT4O]),
        "seed-coder" => spec("seed-coder", &[SEED_CODER]),
        "bailingmoe" | "bailingmoe2" | "llada-moe" => spec("bailingmoe", &[BAILING]),
        _ => return None,
    })
}

/// llama.cpp's split for BPE files that name no (or an unknown) pre-tokenizer.
pub fn default_pre_tokenizer() -> PreTokenizer {
    spec(
        "default",
        &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::SplitDelimiterBehavior;
    use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

    #[test]
    fn every_pattern_compiles() {
        let names = [
            "default",
            "llama-bpe",
            "dbrx",
            "chatglm-bpe",
            "glm4",
            "deepseek-llm",
            "deepseek-coder",
            "deepseek-v3",
            "falcon",
            "starcoder",
            "gpt-2",
            "qwen2",
            "qwen35",
            "grok-2",
            "bloom",
            "viking",
            "tekken",
            "gpt-4o",
            "seed-coder",
            "bailingmoe",
        ];
        for name in names {
            let p = pre_tokenizer(name).unwrap_or_else(|| panic!("{name} is known"));
            for re in p.regexes {
                let pattern = SplitPattern::Regex(re.to_string());
                Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                    .unwrap_or_else(|e| panic!("{name}: {re}: {e}"));
            }
        }
        assert!(pre_tokenizer("no-such-family").is_none());
    }
}
