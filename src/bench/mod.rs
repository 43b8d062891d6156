//! `ferrite bench`: how fast is ferrite on this machine's device? On synthetic models
//! (random weights, real shapes, generated here: no download):
//!
//! 1. copy bandwidth (`bandwidth`), the roofline's denominator;
//! 2. a Mistral-7B-shaped Q4_K_M decoder (`SyntheticModel::mistral_7b_q4k`) written to a
//!    scratch file (or `--model-out`), loaded on the device; batch-1 decode against the
//!    roofline (weight bytes + K/V read per token, over the bandwidth), then 8, 32, 64
//!    and 128 sequences of 512 prompt + 256 output tokens, prefill included (`decode`);
//! 3. rerank of 20 x 256-token documents on a bge-reranker-v2-m3-shaped synthetic
//!    XLM-R (`rerank`), on the device encoder when the bench runs on a GPU.
//!
//! Prints a table, writes JSON with `--json`. `--quick` runs tiny shapes (seconds on a
//! CPU) to prove the path end to end. A wall-clock budget (`budget`) bounds the run: a
//! phase that would start after it is skipped and listed as such; decoding stops a
//! minute early so the rerank phase still fits.

mod bandwidth;
mod budget;
mod decode;
pub mod rerank;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use candle_core::quantized::GgmlDType;
use serde::Serialize;

use budget::Budget;
pub use decode::DecodeResult;
use decode::{BenchModel, PREFILL_CHUNK};
use rerank::{RerankResult, XlmrShape};

use crate::model::device_decoder::DeviceDecoder;
use crate::model::gguf_writer::SyntheticModel;
use crate::model::loader::{load_gguf, load_gguf_with};
use crate::scratch::ScratchDir;
use crate::selftest::{DeviceInfo, SelftestDevice};

/// What `ferrite bench` was asked.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// `auto`, `cpu` or `cuda[:N]`.
    pub device: String,
    /// Where to write the JSON.
    pub json: Option<PathBuf>,
    /// Tiny shapes.
    pub quick: bool,
    /// Keep the decoder GGUF here (reused when present).
    pub model_out: Option<PathBuf>,
    /// Wall-clock budget.
    pub budget: Duration,
}

/// The decoder measured.
#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    /// Its shape in words.
    pub shape: String,
    /// Bytes a decode step reads (device weights; the file size on the CPU).
    pub weight_bytes: usize,
    /// The GGUF file.
    pub file: String,
    /// File size.
    pub file_bytes: u64,
    /// Writing it, seconds (0 when reused).
    pub generate_s: f64,
    /// Loading it onto the device, seconds.
    pub load_s: f64,
}

/// Everything measured.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// ferrite's version.
    pub version: &'static str,
    /// The device.
    pub device: DeviceInfo,
    /// Tiny shapes.
    pub quick: bool,
    /// Copy traffic (read + write), GB/s.
    pub copy_bandwidth_gb_s: f64,
    /// The decoder.
    pub model: Option<ModelSummary>,
    /// Batch-1 first, then the batched runs.
    pub decode: Vec<DecodeResult>,
    /// Rerank timing.
    pub rerank: Option<RerankResult>,
    /// Phases skipped or failed, and why.
    pub skipped: Vec<String>,
    /// Wall time, seconds.
    pub elapsed_s: f64,
}

/// Shapes of one run.
struct Plan {
    model: SyntheticModel,
    shape: &'static str,
    batch1: (usize, usize),
    sizes: &'static [usize],
    seq: (usize, usize),
    rerank: (XlmrShape, usize, usize),
    /// Seconds of the budget kept for the rerank phase (decode stops before them).
    rerank_reserve: u64,
    copy_bytes: usize,
}

impl Plan {
    fn of(quick: bool) -> Self {
        if quick {
            return Self {
                model: SyntheticModel {
                    output_dtype: GgmlDType::Q6K,
                    more_bits_dtype: Some(GgmlDType::Q6K),
                    ..SyntheticModel::tiny(GgmlDType::Q4K)
                },
                shape: "tiny (2 layers, 256 wide) Q4_K_M mix",
                batch1: (32, 16),
                sizes: &[2, 4],
                seq: (32, 16),
                rerank: (XlmrShape::tiny(), 4, 32),
                rerank_reserve: 0,
                copy_bytes: 8 << 20,
            };
        }
        Self {
            model: SyntheticModel::mistral_7b_q4k(),
            shape: "Mistral-7B (32 layers, 4096 wide, 32/8 heads, 14336 FFN, vocab 32000) Q4_K_M",
            batch1: (512, 256),
            sizes: &[8, 32, 64, 128],
            seq: (512, 256),
            rerank: (XlmrShape::bge_reranker_v2_m3(), 20, 256),
            rerank_reserve: 60,
            copy_bytes: 1 << 30,
        }
    }
}

/// Writes (or reuses) the decoder file; returns (path, generate seconds).
fn model_file(plan: &Plan, out: Option<&Path>, scratch: &ScratchDir) -> Result<(PathBuf, f64)> {
    let path = out.map_or_else(|| scratch.join("decoder.gguf"), Path::to_path_buf);
    if path.exists() {
        return Ok((path, 0.0));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let t = Instant::now();
    plan.model.write(&path)?;
    Ok((path, t.elapsed().as_secs_f64()))
}

fn load(device: &SelftestDevice, path: &Path) -> Result<(BenchModel, usize)> {
    let file_bytes = std::fs::metadata(path)?.len() as usize;
    Ok(match device.device() {
        None => (
            BenchModel::Cpu(Box::new(load_gguf(path)?.llama)),
            file_bytes,
        ),
        Some(dev) => {
            let mut m = load_gguf_with(path, |src| DeviceDecoder::load(dev.clone(), src))?.llama;
            m.reserve(PREFILL_CHUNK)?;
            let bytes = m.weight_bytes();
            (BenchModel::Device(Box::new(m)), bytes)
        }
    })
}

/// Runs the bench, prints the table (and writes the JSON).
pub fn run(opts: &BenchOptions) -> Result<BenchReport> {
    if opts.device == "emulator" {
        bail!(
            "--device emulator: the emulator proves correctness (ferrite selftest), not speed; use cpu or cuda"
        );
    }
    let budget = Budget::new(opts.budget);
    let plan = Plan::of(opts.quick);
    let reserve = Duration::from_secs(plan.rerank_reserve);
    let decode_budget = Budget::new(opts.budget.saturating_sub(reserve));
    let device = SelftestDevice::open(&opts.device)?;
    let info = device.info();
    println!("{}\n", info.describe());
    let bw = bandwidth::copy_bandwidth(&device, plan.copy_bytes)?;
    println!("copy bandwidth: {:.1} GB/s (read + write)", bw / 1e9);
    let scratch = ScratchDir::new("bench")?;
    let mut report = BenchReport {
        version: env!("CARGO_PKG_VERSION"),
        device: info,
        quick: opts.quick,
        copy_bandwidth_gb_s: bw / 1e9,
        model: None,
        decode: Vec::new(),
        rerank: None,
        skipped: Vec::new(),
        elapsed_s: 0.0,
    };
    if let Err(e) = decoder(
        &plan,
        opts,
        &device,
        &scratch,
        bw,
        &decode_budget,
        &mut report,
    ) {
        report.skipped.push(format!("decoder: {e:#}"));
    }
    rerank_phase(&plan, &device, &scratch, &budget, &mut report);
    report.elapsed_s = budget.elapsed_s();
    print!("\n{}", table(&report));
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn decoder(
    plan: &Plan,
    opts: &BenchOptions,
    device: &SelftestDevice,
    scratch: &ScratchDir,
    bw: f64,
    budget: &Budget,
    report: &mut BenchReport,
) -> Result<()> {
    let (path, generate_s) = model_file(plan, opts.model_out.as_deref(), scratch)?;
    println!("decoder: {} ({})", plan.shape, path.display());
    let t = Instant::now();
    let (mut model, weight_bytes) = load(device, &path)?;
    report.model = Some(ModelSummary {
        shape: plan.shape.into(),
        weight_bytes,
        file: path.display().to_string(),
        file_bytes: std::fs::metadata(&path)?.len(),
        generate_s,
        load_s: t.elapsed().as_secs_f64(),
    });
    let runs = std::iter::once((1, plan.batch1)).chain(plan.sizes.iter().map(|&n| (n, plan.seq)));
    for (n, (prompt, output)) in runs {
        if budget.over() {
            report
                .skipped
                .push(format!("decode x{n}: time budget spent"));
            continue;
        }
        let r = decode::measure(
            &mut model,
            (n, prompt, output),
            Some((weight_bytes, bw)),
            budget,
        )?;
        println!(
            "  {n:>3} seqs: prefill {:.0} tok/s, step p50 {:.2} ms, {:.0} output tok/s",
            r.prefill_tok_s, r.step_p50_ms, r.output_tok_s
        );
        report.decode.push(r);
    }
    Ok(())
}

fn rerank_phase(
    plan: &Plan,
    device: &SelftestDevice,
    scratch: &ScratchDir,
    budget: &Budget,
    report: &mut BenchReport,
) {
    if budget.over() {
        report.skipped.push("rerank: time budget spent".into());
        return;
    }
    let (shape, docs, tokens) = plan.rerank;
    let dir = scratch.join("reranker");
    let result = std::fs::create_dir_all(&dir)
        .map_err(anyhow::Error::from)
        .and_then(|_| rerank::measure(&dir, shape, (docs, tokens), device.device(), budget));
    match result {
        Ok(r) => report.rerank = Some(r),
        Err(e) => report.skipped.push(format!("rerank: {e:#}")),
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".into(), f)
}

/// The printed summary.
pub fn table(r: &BenchReport) -> String {
    let mut s = format!("ferrite bench on {}\n", r.device.name);
    s.push_str(&format!(
        "copy bandwidth      {:.1} GB/s\n",
        r.copy_bandwidth_gb_s
    ));
    if let Some(m) = &r.model {
        s.push_str(&format!(
            "decoder             {}: {:.1} MiB read per step, load {:.1} s\n",
            m.shape,
            m.weight_bytes as f64 / (1u64 << 20) as f64,
            m.load_s
        ));
    }
    s.push_str("\n| seqs | prompt+out | steps | prefill tok/s | step p50 ms | step p99 ms | output tok/s | roofline |\n");
    s.push_str("|---|---|---|---|---|---|---|---|\n");
    for d in &r.decode {
        let roof = opt(d.roofline_frac, |f| {
            format!(
                "{:.0}% of {:.2} ms",
                100.0 * f,
                d.roofline_ms.unwrap_or(f64::NAN)
            )
        });
        s.push_str(&format!(
            "| {} | {}+{} | {} | {:.0} | {:.2} | {:.2} | {:.0} | {roof} |\n",
            d.seqs,
            d.prompt,
            d.output,
            d.steps,
            d.prefill_tok_s,
            d.step_p50_ms,
            d.step_p99_ms,
            d.output_tok_s
        ));
    }
    if let Some(x) = &r.rerank {
        s.push_str(&format!(
            "\nrerank              {} x {} tokens, {} layers x {} wide, on the {} ({}): p50 {:.1} ms, min {:.1} ms over {} requests\n",
            x.docs,
            x.tokens,
            x.shape.layers,
            x.shape.hidden,
            x.runs_on,
            x.precision,
            x.p50_ms,
            x.min_ms,
            x.reps
        ));
    }
    for k in &r.skipped {
        s.push_str(&format!("skipped: {k}\n"));
    }
    s.push_str(&format!("total {:.1} s\n", r.elapsed_s));
    s
}
