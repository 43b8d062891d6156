//! The description read from each architecture's synthetic file: what the rules and
//! the keys say, and clear errors for what is not supported.

use candle_core::quantized::{GgmlDType, gguf_file};

use super::*;
use crate::model::gguf_writer::SyntheticModel;

fn spec_of(m: &SyntheticModel) -> Result<ModelSpec> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "ferrite-spec-{}-{}-{n}",
        m.arch,
        std::process::id()
    ));
    m.write(&dir)?;
    let mut r = std::io::BufReader::new(std::fs::File::open(&dir)?);
    let ct = gguf_file::Content::read(&mut r)?;
    std::fs::remove_file(&dir)?;
    ModelSpec::from_gguf(&ct.metadata, &mut |_| Ok(None))
}

#[test]
fn every_architecture_reads_its_keys_and_rules() {
    for arch in ARCHITECTURES {
        let m = SyntheticModel::tiny_arch(arch, GgmlDType::Q8_0);
        let s = spec_of(&m).unwrap_or_else(|e| panic!("{arch}: {e:#}"));
        assert_eq!(s.arch, arch);
        assert_eq!(
            s.head_dim,
            m.head_dim(),
            "{arch}: head width from key_length"
        );
        assert_eq!(s.layers.len(), m.n_layer);
        let halves = !matches!(arch, "llama" | "mistral");
        assert_eq!(s.ropes[0].style == RopeStyle::Halves, halves, "{arch}");
        let gemma = arch.starts_with("gemma");
        assert_eq!(s.act == Activation::GeluTanh, gemma, "{arch}");
        assert_eq!(s.embed_scale != 1.0, gemma, "{arch}");
    }
}

#[test]
fn gemma_windows_caps_and_local_rope() {
    let g2 = spec_of(&SyntheticModel::tiny_arch("gemma2", GgmlDType::Q8_0)).unwrap();
    assert_eq!(g2.attn_softcap, Some(50.0));
    assert_eq!(g2.final_softcap, Some(30.0));
    // Pattern 2: even layers slide, odd ones see everything.
    assert_eq!(g2.layers[0].window, Some(16));
    assert_eq!(g2.layers[1].window, None);
    assert_eq!(g2.ropes.len(), 1);
    let g3 = spec_of(&SyntheticModel::tiny_arch("gemma3", GgmlDType::Q8_0)).unwrap();
    assert_eq!(g3.final_softcap, None);
    assert_eq!(g3.ropes.len(), 2);
    assert_eq!((g3.ropes[0].base, g3.ropes[1].base), (1e6, 1e4));
    assert_eq!(
        g3.layers[0].rope, 1,
        "the sliding layer rotates with the local base"
    );
    assert_eq!(g3.layers[1].rope, 0);
    assert!(
        g3.layers.iter().any(|l| l.window.is_none()),
        "a global layer sees everything"
    );
}

#[test]
fn phi3_partial_rotary_and_llama_without_window() {
    let p = spec_of(&SyntheticModel::tiny_arch("phi3", GgmlDType::Q8_0)).unwrap();
    assert_eq!(p.ropes[0].n_rot * 2, p.head_dim);
    let l = spec_of(&SyntheticModel::tiny_arch("llama", GgmlDType::Q8_0)).unwrap();
    assert_eq!(l.ropes[0].base, 500_000.0);
    assert!(l.layers.iter().all(|l| l.window.is_none()));
    let mut m = SyntheticModel::tiny_arch("mistral", GgmlDType::Q8_0);
    m.features.sliding_window = Some(32);
    let s = spec_of(&m).unwrap();
    assert!(
        s.layers.iter().all(|l| l.window == Some(32)),
        "every layer slides"
    );
}

#[test]
fn unknown_architecture_lists_the_supported_ones() {
    let mut m = SyntheticModel::tiny(GgmlDType::Q8_0);
    m.arch = "rwkv7".into();
    let err = spec_of(&m).unwrap_err().to_string();
    assert!(err.contains("unsupported architecture `rwkv7`"), "{err}");
    for a in ARCHITECTURES {
        assert!(err.contains(a), "{err}");
    }
}
