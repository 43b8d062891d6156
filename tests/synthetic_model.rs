//! Synthetic llama GGUF files of every common type load, tokenize and run a forward pass.

mod common;

use candle_core::quantized::{GgmlDType, gguf_file};
use common::TempFile;
use ferrite::model::gguf_writer::SyntheticModel;
use ferrite::model::loader::load_gguf;
use ferrite::model::paged_attention::{PagedKvCache, SeqSpan};
use ferrite::model::spec::ModelSpec;
use ferrite::model::transformer::BatchInput;

/// The hyper-parameters a synthetic llama file must load as.
fn check_config(cfg: &ModelSpec, m: &SyntheticModel) {
    let got = (
        cfg.arch.as_str(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_ff,
        cfg.n_head,
        cfg.n_kv_head,
        cfg.head_dim,
        cfg.rms_eps,
        cfg.context_length,
        cfg.vocab_size,
    );
    let want = (
        "llama",
        m.n_layer,
        m.n_embd,
        m.n_ff,
        m.n_head,
        m.n_kv_head,
        m.head_dim(),
        1e-5,
        m.context_length,
        m.vocab_size,
    );
    assert_eq!(got, want);
    assert_eq!(cfg.ropes.len(), 1);
    assert_eq!(cfg.ropes[0].base, 10_000.0);
    assert!(cfg.layers.iter().all(|l| l.window.is_none()));
}

/// Writes, loads and runs one synthetic model.
fn check(dtype: GgmlDType, tie_embeddings: bool) {
    let model = SyntheticModel {
        tie_embeddings,
        ..SyntheticModel::tiny(dtype)
    };
    let file = TempFile::new(&format!("{dtype:?}-{tie_embeddings}"));
    model.write(&file.0).unwrap();
    let loaded = load_gguf(&file.0).unwrap_or_else(|e| panic!("{dtype:?}: {e:#}"));
    let cfg = loaded.llama.config();
    check_config(cfg, &model);

    let tk = &loaded.tokenizer;
    assert_eq!(tk.encode("<|im_start|>").unwrap(), [1]);
    let the = tk.encode("the").unwrap();
    assert!(!the.is_empty() && the.len() <= 3, "{the:?}");
    assert_eq!(tk.decode(&the), "the");
    assert_eq!(
        tk.encode(" the").unwrap().len(),
        1,
        "the merges make one token of \" the\""
    );

    let tokens = tk
        .encode("<|im_start|>user\nthe cat sat<|im_end|>")
        .unwrap();
    let len = tokens.len();
    let block_size = 16;
    let num_blocks = len.div_ceil(block_size) + 1;
    let block_table: Vec<u32> = (0..num_blocks as u32).collect();
    let mut cache = PagedKvCache::new(
        cfg.n_layer,
        num_blocks,
        block_size,
        cfg.n_kv_head,
        cfg.head_dim,
    );
    let input = BatchInput {
        tokens,
        positions: (0..len).collect(),
        slots: (0..len).collect(),
        spans: vec![SeqSpan {
            offset: 0,
            len,
            start_pos: 0,
            block_table,
        }],
        logits_rows: vec![len - 1],
    };
    let logits = loaded.llama.forward(&input, &mut cache).unwrap();
    assert_eq!(logits.len(), 1);
    assert_eq!(logits[0].len(), model.vocab_size);
    assert!(
        logits[0].iter().all(|x| x.is_finite()),
        "{dtype:?}: non-finite logits"
    );
    assert!(
        logits[0].iter().any(|&x| x != 0.0),
        "{dtype:?}: all-zero logits"
    );
}

#[test]
fn f32_model_loads_and_runs() {
    check(GgmlDType::F32, false);
}

#[test]
fn f16_model_loads_and_runs() {
    check(GgmlDType::F16, false);
}

#[test]
fn q8_0_model_loads_and_runs() {
    check(GgmlDType::Q8_0, false);
}

#[test]
fn q4_0_model_loads_and_runs() {
    check(GgmlDType::Q4_0, false);
}

#[test]
fn q4_1_model_with_tied_embeddings_loads_and_runs() {
    check(GgmlDType::Q4_1, true);
}

#[test]
fn q4k_model_loads_and_runs() {
    check(GgmlDType::Q4K, false);
}

#[test]
fn q6k_model_loads_and_runs() {
    check(GgmlDType::Q6K, false);
}

#[test]
fn q4k_m_mix_loads_and_runs() {
    // The 7B recipe (Q6_K output, more-bits layers) on 16 small layers, so that both
    // Q4_K and Q6_K appear in attn_v / ffn_down.
    let mut model = SyntheticModel::tiny(GgmlDType::Q4K);
    model.n_layer = 16;
    model.output_dtype = GgmlDType::Q6K;
    model.more_bits_dtype = Some(GgmlDType::Q6K);
    let file = TempFile::new("q4km");
    model.write(&file.0).unwrap();
    let mut reader = std::io::BufReader::new(std::fs::File::open(&file.0).unwrap());
    let content = gguf_file::Content::read(&mut reader).unwrap();
    let dtype = |name: &str| content.tensor_infos[name].ggml_dtype;
    assert_eq!(dtype("output.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("token_embd.weight"), GgmlDType::Q4K);
    assert_eq!(dtype("blk.0.attn_v.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("blk.2.ffn_down.weight"), GgmlDType::Q4K);
    assert_eq!(dtype("blk.4.ffn_down.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("blk.15.attn_v.weight"), GgmlDType::Q6K);
    assert_eq!(dtype("blk.15.attn_q.weight"), GgmlDType::Q4K);
    let loaded = load_gguf(&file.0).unwrap();
    check_config(loaded.llama.config(), &model);
}
