//! Load time and resident memory of a Mistral-7B-shaped Q4_K_M GGUF.
//!
//! `cargo bench --bench load_7b`. The synthetic file (random weights, real shapes) is
//! generated once at `$FERRITE_BENCH_GGUF` or `target/bench-models/
//! mistral-7b-q4km-synthetic.gguf` and reused afterwards. Reports generation time and
//! file size, then `load_gguf` time and the process's VmRSS / VmHWM before and after,
//! then the time of two one-token forward passes and the memory after them (candle
//! repacks Q4_K weights for its x86 kernels lazily, on the first matmul). The file is usually still in the page
//! cache when it was just generated, so the load time is a warm-cache figure.

mod common;

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use ferrite::model::gguf_writer::SyntheticModel;
use ferrite::model::loader::{LoadedModel, load_gguf};
use ferrite::model::paged_attention::{PagedKvCache, SeqSpan};
use ferrite::model::transformer::BatchInput;

const GIB: f64 = (1u64 << 30) as f64;

/// `(VmRSS, VmHWM)` of this process in bytes.
fn memory() -> Result<(u64, u64)> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let field = |key: &str| -> Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("{key} missing from /proc/self/status"))?;
        let kb: u64 = line[key.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

type Rows = Vec<(&'static str, String)>;

/// Generates the file unless it exists; returns its size.
fn ensure_file(path: &Path, rows: &mut Rows) -> Result<u64> {
    if path.exists() {
        rows.push(("generation", "reused existing file".into()));
    } else {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        println!("generating {} ...", path.display());
        let t = Instant::now();
        SyntheticModel::mistral_7b_q4k().write(path)?;
        let secs = t.elapsed().as_secs_f64();
        let size = std::fs::metadata(path)?.len();
        let rate = size as f64 / GIB / secs;
        rows.push(("generation", format!("{secs:.1} s ({rate:.2} GiB/s)")));
    }
    let size = std::fs::metadata(path)?.len();
    rows.push(("file", path.display().to_string()));
    rows.push(("file size", format!("{} ({size} bytes)", gib(size))));
    Ok(size)
}

/// Times `load_gguf` and records memory around it.
fn load(path: &Path, size: u64, rows: &mut Rows) -> Result<LoadedModel> {
    let (rss0, hwm0) = memory()?;
    let t = Instant::now();
    let loaded = load_gguf(path)?;
    let secs = t.elapsed().as_secs_f64();
    let (rss1, hwm1) = memory()?;
    let rate = size as f64 / GIB / secs;
    rows.push(("load_gguf", format!("{secs:.2} s ({rate:.2} GiB/s)")));
    rows.push((
        "VmRSS before / after load",
        format!("{} / {}", gib(rss0), gib(rss1)),
    ));
    rows.push((
        "VmHWM before / after load",
        format!("{} / {}", gib(hwm0), gib(hwm1)),
    ));
    let growth = rss1.saturating_sub(rss0) as f64 / size as f64;
    rows.push(("RSS growth / file size", format!("{growth:.3}")));
    Ok(loaded)
}

/// Two one-token forwards: the first pays candle's lazy weight repacking.
fn forwards(loaded: &LoadedModel, rows: &mut Rows) -> Result<()> {
    let cfg = loaded.llama.config();
    let mut cache = PagedKvCache::new(cfg.n_layer, 1, 16, cfg.n_kv_head, cfg.head_dim);
    for (pos, label) in [(0, "1st 1-token forward"), (1, "2nd 1-token forward")] {
        let input = BatchInput {
            tokens: vec![1],
            positions: vec![pos],
            slots: vec![pos],
            spans: vec![SeqSpan {
                offset: 0,
                len: 1,
                start_pos: pos,
                block_table: vec![0],
            }],
            logits_rows: vec![0],
        };
        let t = Instant::now();
        let logits = loaded.llama.forward(&input, &mut cache)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(logits[0].iter().all(|x| x.is_finite()), "non-finite logits");
        rows.push((label, format!("{ms:.0} ms (CPU), logits finite")));
    }
    let (rss, hwm) = memory()?;
    rows.push((
        "VmRSS / VmHWM after forwards",
        format!("{} / {}", gib(rss), gib(hwm)),
    ));
    Ok(())
}

fn main() -> Result<()> {
    let path = common::bench_7b_path();
    let mut rows = Rows::new();
    let size = ensure_file(&path, &mut rows)?;
    let loaded = load(&path, size, &mut rows)?;
    forwards(&loaded, &mut rows)?;
    let cfg = loaded.llama.config();
    println!("\nload_7b: Mistral-7B shapes, Q4_K_M mix, synthetic weights");
    println!(
        "  config: {} layers, {} wide, {} ff, {}/{} heads, vocab {}",
        cfg.n_layer, cfg.n_embd, cfg.n_ff, cfg.n_head, cfg.n_kv_head, cfg.vocab_size
    );
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("  {k:<w$}  {v}");
    }
    Ok(())
}
