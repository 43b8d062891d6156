//! `ferrite selftest`: does ferrite compute correctly on this machine's device?
//!
//! On a device (`cuda[:N]`, or `emulator`: the same kernels built for the host), every
//! kernel through its checked wrapper against the CPU reference on fresh random inputs
//! with edge-case shapes (`quant_checks`, `row_checks`, `attention_checks`, `encoder_checks`), then a
//! tiny whole decoder against the CPU decoder (`model_check`). On the CPU (`cpu`, or
//! `auto` without a usable GPU) the CPU kernels of every instruction-set path this
//! machine has against their scalar twins (`cpu_checks`). Prints the device found and a
//! table (kernel, shapes, max error, bound, pass); `--json` writes the same as JSON.
//!
//! Invariants: a check that fails to run (a refused shape, a launch error, even a
//! panic) is a failed row, never an abort of the rest; every output buffer is poisoned
//! (NaN) before the kernel writes it, so an unwritten element fails; [`run`] returns
//! the report and the caller turns failures into a non-zero exit.

mod attention_checks;
mod cpu_checks;
mod device_info;
mod encoder_checks;
pub mod measure;
mod model_check;
mod quant_checks;
mod row_checks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

pub use device_info::{DeviceInfo, SelftestDevice};
use measure::CheckResult;

use crate::device::kernels::Device;

/// What `ferrite selftest` was asked.
#[derive(Debug, Clone)]
pub struct SelftestOptions {
    /// `auto`, `cpu`, `cuda[:N]` or `emulator`.
    pub device: String,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Base of every random input (default: from the clock; printed).
    pub seed: Option<u64>,
    /// Run only the checks whose name contains one of these (empty: all).
    pub filter: Vec<String>,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// ferrite's version.
    pub version: &'static str,
    /// The device checked.
    pub device: DeviceInfo,
    /// Base seed of the random inputs (rerun with `--seed` to repeat).
    pub seed: u64,
    /// One row per check.
    pub checks: Vec<CheckResult>,
    /// Checks that passed.
    pub passed: usize,
    /// Checks that failed.
    pub failed: usize,
    /// Wall time of all checks, seconds.
    pub elapsed_s: f64,
}

/// Seeds of the random inputs: one base, mixed with a salt per input.
#[derive(Debug, Clone, Copy)]
pub struct Seeds(pub u64);

impl Seeds {
    /// The seed of input `salt`.
    pub fn seed(&self, salt: u64) -> u64 {
        self.0 ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }
}

/// What a device check runs on.
pub(crate) struct Ctx<'a> {
    /// The device.
    pub dev: &'a dyn Device,
    /// The same, shared (the model check loads a model onto it).
    pub arc: Arc<dyn Device>,
    /// Random inputs.
    pub seeds: Seeds,
    /// Add layer-sized shapes (on a real GPU, where they cost nothing).
    pub large: bool,
}

impl Ctx<'_> {
    /// The seed of input `salt`.
    pub fn seed(&self, salt: u64) -> u64 {
        self.seeds.seed(salt)
    }
}

/// Runs `f`, turning a panic into an error value (the check fails, the rest still run).
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(format!("panicked: {msg}"))
    })
}

/// The table being filled, with the `--filter` that picks its rows.
pub(crate) struct Rows {
    rows: Vec<CheckResult>,
    filter: Vec<String>,
}

impl Rows {
    /// Whether a check named `name` is to run.
    pub fn wants(&self, name: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| name.contains(f.as_str()))
    }

    /// Appends a finished row.
    pub fn push(&mut self, row: CheckResult) {
        self.rows.push(row);
    }

    /// Runs one check (guarded, timed) when the filter wants it, and appends its row.
    pub fn record(
        &mut self,
        name: &str,
        shapes: &str,
        f: impl FnOnce() -> Result<measure::Worst, String>,
    ) {
        if !self.wants(name) {
            return;
        }
        let t = Instant::now();
        let mut row = match guarded(f) {
            Ok(w) => w.finish(name, shapes),
            Err(e) => CheckResult::failed(name, shapes, e),
        };
        row.elapsed_ms = t.elapsed().as_secs_f64() * 1e3;
        self.rows.push(row);
    }
}

/// Opens the device, runs every check, prints the table (and writes the JSON).
pub fn run(opts: &SelftestOptions) -> Result<Report> {
    let device = SelftestDevice::open(&opts.device)?;
    let seed = opts.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let info = device.info();
    println!("{}", info.describe());
    println!("seed {seed} (repeat with --seed {seed})\n");
    let t = Instant::now();
    let seeds = Seeds(seed);
    let mut rows = Rows {
        rows: Vec::new(),
        filter: opts.filter.clone(),
    };
    match device.device() {
        None => cpu_checks::run(&seeds, &mut rows),
        Some(arc) => {
            let ctx = Ctx {
                dev: arc.as_ref(),
                arc: arc.clone(),
                seeds,
                large: device.is_gpu(),
            };
            quant_checks::run(&ctx, &mut rows);
            row_checks::run(&ctx, &mut rows);
            attention_checks::run(&ctx, &mut rows);
            encoder_checks::run(&ctx, &mut rows);
            model_check::run(&ctx, &mut rows);
        }
    }
    let checks = rows.rows;
    anyhow::ensure!(
        !checks.is_empty(),
        "--filter {:?} matches no check",
        opts.filter
    );
    let failed = checks.iter().filter(|c| !c.pass).count();
    let report = Report {
        version: env!("CARGO_PKG_VERSION"),
        device: info,
        seed,
        passed: checks.len() - failed,
        failed,
        checks,
        elapsed_s: t.elapsed().as_secs_f64(),
    };
    print!("{}", table(&report.checks));
    println!(
        "\n{} of {} checks passed on {} in {:.1} s",
        report.passed,
        report.checks.len(),
        report.device.name,
        report.elapsed_s
    );
    if let Some(path) = &opts.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v == 0.0 {
        "0".into()
    } else {
        format!("{v:.2e}")
    }
}

/// The table: kernel, shapes, max error, bound, pass; the reason under each failure.
pub fn table(checks: &[CheckResult]) -> String {
    let kw = checks
        .iter()
        .map(|c| c.kernel.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let sw = checks
        .iter()
        .map(|c| c.shapes.len())
        .max()
        .unwrap_or(6)
        .clamp(6, 72);
    let mut s = format!(
        "{:<kw$}  {:<sw$}  {:>9}  {:>9}  pass  {:>7}\n",
        "kernel", "shapes", "max error", "bound", "ms"
    );
    s.push_str(&format!("{}\n", "-".repeat(kw + sw + 39)));
    for c in checks {
        let shapes: String = c.shapes.chars().take(sw).collect();
        s.push_str(&format!(
            "{:<kw$}  {:<sw$}  {:>9}  {:>9}  {:<4}  {:>7.1}\n",
            c.kernel,
            shapes,
            num(c.max_error),
            num(c.bound),
            if c.pass { "ok" } else { "FAIL" },
            c.elapsed_ms
        ));
        if let Some(d) = c.detail.as_ref().filter(|_| !c.pass) {
            s.push_str(&format!("    -> {d}\n"));
        }
    }
    s
}
