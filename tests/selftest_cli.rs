//! `ferrite selftest` and `ferrite bench` through the built binary: the table and JSON
//! shapes and the exit codes, on the CPU and on the kernel emulator (the same check
//! code a GPU runs), and `--device cuda` on a machine without a GPU failing at once with
//! the reason and no backtrace.

mod common;

use std::process::{Command, Output};

use common::{TempFile, binary, repo_root};
use serde_json::Value;

fn ferrite(args: &[&str]) -> Output {
    Command::new(binary())
        .args(args)
        // The emulator's library is shared with the kernel tests (built once).
        .env("FERRITE_EMU_CACHE", repo_root().join("target/emu-kernels"))
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("running ferrite")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn json(file: &TempFile) -> Value {
    let s = std::fs::read_to_string(&file.0).expect("the JSON report was written");
    serde_json::from_str(&s).expect("valid JSON")
}

/// Every row has the table's fields, passed, with a finite error within its bound.
fn assert_all_pass(report: &Value, min_rows: usize) -> Vec<String> {
    let checks = report["checks"].as_array().expect("checks");
    assert!(checks.len() >= min_rows, "{} rows", checks.len());
    for c in checks {
        let (err, bound) = (c["max_error"].as_f64(), c["bound"].as_f64());
        assert_eq!(c["pass"], true, "{c}");
        assert!(c["compared"].as_u64().unwrap() > 0, "{c}");
        assert!(err.unwrap() <= bound.unwrap(), "{c}");
    }
    assert_eq!(report["failed"], 0);
    assert_eq!(report["passed"].as_u64().unwrap() as usize, checks.len());
    checks
        .iter()
        .map(|c| c["kernel"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn selftest_on_the_cpu_checks_every_simd_path_and_passes() {
    let file = TempFile::new("selftest-cpu.json");
    let out = ferrite(&[
        "selftest",
        "--device",
        "cpu",
        "--json",
        file.0.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("device: cpu"), "{stdout}");
    assert!(
        stdout.contains("kernel") && stdout.contains("max error"),
        "{stdout}"
    );
    let report = json(&file);
    assert_eq!(report["device"]["kind"], "cpu");
    let names = assert_all_pass(&report, 26);
    for want in [
        "cpu qmatmul q4_k",
        "cpu qmatmul q6_k vs f64",
        "cpu attention",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(want)),
            "{want} in {names:?}"
        );
    }
    let seed = report["seed"].as_u64().unwrap();
    assert!(stdout.contains(&format!("--seed {seed}")), "{stdout}");
}

/// One of each kind of device check (the slow attention and model checks are the
/// same kernels `gpu_kernels` and `device_model` run on the emulator).
const EMULATOR_FILTER: &str = "qmatvec q4_k,qmatmul q4_k,dequant_rows q4_k,qmatmul bf16,dequant_rows q2_k,qmatmul_into,rms_norm,rotary,silu,argmax,gather,kv_write,gemm_f16w,layer_norm_residual,embed_layer_norm,pool_rows";

#[test]
fn selftest_on_the_emulator_runs_the_device_checks() {
    let file = TempFile::new("selftest-emu.json");
    let out = ferrite(&[
        "selftest",
        "--device",
        "emulator",
        "--seed",
        "7",
        "--filter",
        EMULATOR_FILTER,
        "--json",
        file.0.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let report = json(&file);
    assert_eq!(report["device"]["kind"], "emulator");
    assert_eq!(report["seed"], 7);
    let names = assert_all_pass(&report, 16);
    for want in [
        "qmatvec q4_k",
        "qmatmul q4_k",
        "dequant_rows q4_k",
        "qmatmul bf16",
        "dequant_rows q2_k",
        "qmatmul_into q8_0",
        "rms_norm_residual",
        "rotary",
        "silu_gate_up",
        "argmax_rows",
        "gather_rows",
        "kv_write",
        "gemm_f16w",
        "layer_norm_residual",
        "embed_layer_norm",
        "pool_rows",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.contains("attention") || n.starts_with("decoder")),
        "{names:?}"
    );
    // A filter that matches nothing is an error, not an empty pass.
    let none = ferrite(&[
        "selftest",
        "--device",
        "emulator",
        "--filter",
        "nothing-named-so",
    ]);
    assert_eq!(none.status.code(), Some(2), "{:?}", text(&none));
}

#[test]
fn selftest_on_a_missing_gpu_fails_fast_with_the_reason() {
    let out = ferrite(&["selftest", "--device", "cuda"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("ferrite selftest: --device cuda: "),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let bad = ferrite(&["selftest", "--device", "tpu"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).1.contains("expected auto, cpu or cuda"),
        "{:?}",
        text(&bad)
    );
}

#[test]
fn quick_bench_on_the_cpu_reports_every_phase() {
    let file = TempFile::new("bench-quick.json");
    let model = TempFile::new("bench-quick.gguf");
    let out = ferrite(&[
        "bench",
        "--quick",
        "--device",
        "cpu",
        "--model-out",
        model.0.to_str().unwrap(),
        "--json",
        file.0.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("| seqs | prompt+out |"), "{stdout}");
    assert!(model.0.exists(), "--model-out keeps the decoder");
    let r = json(&file);
    assert_eq!(
        (r["quick"].as_bool(), r["device"]["kind"].as_str()),
        (Some(true), Some("cpu"))
    );
    assert!(r["copy_bandwidth_gb_s"].as_f64().unwrap() > 0.0);
    assert_eq!(
        r["skipped"].as_array().unwrap().len(),
        0,
        "{}",
        r["skipped"]
    );
    let decode = r["decode"].as_array().unwrap();
    let seqs: Vec<u64> = decode.iter().map(|d| d["seqs"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 4]);
    for d in decode {
        assert_eq!(d["steps"], d["output"], "{d}");
        for k in ["prefill_tok_s", "output_tok_s", "step_p50_ms"] {
            assert!(d[k].as_f64().unwrap() > 0.0, "{k} in {d}");
        }
    }
    let roof = decode[0]["roofline_frac"].as_f64().unwrap();
    assert!(roof > 0.0 && roof.is_finite(), "{roof}");
    let rerank = &r["rerank"];
    assert_eq!(
        (rerank["docs"].as_u64(), rerank["tokens"].as_u64()),
        (Some(4), Some(32))
    );
    assert!(rerank["p50_ms"].as_f64().unwrap() > 0.0);
    assert!(rerank["runs_on"].as_str().unwrap().contains("cpu"));
}

#[test]
fn bench_refuses_the_emulator_with_a_reason() {
    let out = ferrite(&["bench", "--device", "emulator", "--quick"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).1.contains("ferrite selftest"),
        "{:?}",
        text(&out)
    );
}
