//! Prometheus metrics: the names ferrite exports, their help texts, and the recorder
//! installed once per process. Engine gauges are set inside the engine loop; latency
//! histograms are recorded by the HTTP side as tokens stream out.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Sequences holding KV blocks (gauge).
pub const REQUESTS_RUNNING: &str = "ferrite_requests_running";
/// Sequences waiting to be scheduled, preempted ones included (gauge).
pub const REQUESTS_WAITING: &str = "ferrite_requests_waiting";
/// KV blocks in use (gauge).
pub const KV_BLOCKS_USED: &str = "ferrite_kv_cache_blocks_used";
/// KV blocks in the pool (gauge).
pub const KV_BLOCKS_TOTAL: &str = "ferrite_kv_cache_blocks_total";
/// Tokens computed per engine step (histogram).
pub const BATCH_TOKENS: &str = "ferrite_batch_tokens";
/// Sequences per engine step (histogram).
pub const BATCH_SEQUENCES: &str = "ferrite_batch_sequences";
/// Seconds of one engine step (histogram).
pub const STEP_SECONDS: &str = "ferrite_step_seconds";
/// Seconds to compute one step's grammar masks, all constrained rows (histogram).
pub const GRAMMAR_MASK_SECONDS: &str = "ferrite_grammar_mask_seconds";
/// Seconds a step waited for its grammar masks after the forward finished (histogram).
pub const GRAMMAR_STALL_SECONDS: &str = "ferrite_grammar_stall_seconds";
/// Seconds from request arrival to its first token (histogram).
pub const TTFT_SECONDS: &str = "ferrite_time_to_first_token_seconds";
/// Seconds between consecutive tokens of one stream (histogram).
pub const ITL_SECONDS: &str = "ferrite_inter_token_latency_seconds";
/// Seconds from request arrival to its last event (histogram).
pub const REQUEST_SECONDS: &str = "ferrite_request_duration_seconds";
/// Prompt tokens admitted (counter).
pub const PROMPT_TOKENS_TOTAL: &str = "ferrite_prompt_tokens_total";
/// Tokens generated (counter).
pub const GENERATION_TOKENS_TOTAL: &str = "ferrite_generation_tokens_total";
/// Finished HTTP requests by `status` label (counter).
pub const REQUESTS_TOTAL: &str = "ferrite_requests_total";
/// Sequences preempted for lack of KV blocks (counter).
pub const PREEMPTIONS_TOTAL: &str = "ferrite_preemptions_total";
/// Prompt tokens looked up in the prefix cache (counter).
pub const PREFIX_CACHE_QUERIED_TOKENS_TOTAL: &str = "ferrite_prefix_cache_queried_tokens_total";
/// Prompt tokens found in the prefix cache, not recomputed (counter).
pub const PREFIX_CACHE_HIT_TOKENS_TOTAL: &str = "ferrite_prefix_cache_hit_tokens_total";
/// Sequences aborted because their client went away (counter).
pub const CANCELLED_TOTAL: &str = "ferrite_sequences_cancelled_total";
/// Speculative draft tokens verified (counter; see `engine::speculate`).
pub const SPEC_DRAFT_TOKENS_TOTAL: &str = "ferrite_speculative_draft_tokens_total";
/// Speculative draft tokens accepted: each saved one decode step (counter). Divided by
/// `ferrite_speculative_draft_tokens_total` it is the acceptance rate.
pub const SPEC_ACCEPTED_TOKENS_TOTAL: &str = "ferrite_speculative_accepted_tokens_total";
/// Response-cache lookups answered from the cache (counter).
pub const CACHE_HITS_TOTAL: &str = "ferrite_cache_hits_total";
/// Response-cache lookups that found nothing fresh (counter).
pub const CACHE_MISSES_TOTAL: &str = "ferrite_cache_misses_total";
/// Open HTTP connections, bounded by `--max-connections` (gauge).
pub const HTTP_CONNECTIONS: &str = "ferrite_http_connections";

/// 1 while the admission of new sequences is paused (device memory pressure), else 0
/// (gauge).
pub const ADMISSION_PAUSED: &str = "ferrite_admission_paused";

/// GPU memory in use, all processes, by `gpu` index label (gauge; NVML, `cuda` builds).
pub const GPU_MEMORY_USED_BYTES: &str = "ferrite_gpu_memory_used_bytes";
/// GPU memory installed, by `gpu` index label (gauge; NVML, `cuda` builds).
pub const GPU_MEMORY_TOTAL_BYTES: &str = "ferrite_gpu_memory_total_bytes";
/// Percent of the last sample period a kernel ran, 0..100, by `gpu` label (gauge).
pub const GPU_UTILIZATION_PERCENT: &str = "ferrite_gpu_utilization_percent";
/// GPU die temperature in degrees Celsius, by `gpu` label (gauge).
pub const GPU_TEMPERATURE_CELSIUS: &str = "ferrite_gpu_temperature_celsius";

/// Encoder requests (embeddings and rerank) by `route` label (counter).
pub const ENCODER_REQUESTS_TOTAL: &str = "ferrite_encoder_requests_total";
/// Tokens per encoder batch (histogram).
pub const ENCODER_BATCH_TOKENS: &str = "ferrite_encoder_batch_tokens";
/// Seconds from an encoder job's arrival at the engine to its reply (histogram).
pub const ENCODER_LATENCY_SECONDS: &str = "ferrite_encoder_latency_seconds";
/// Encoder inputs queued and not yet run (gauge).
pub const ENCODER_WAITING: &str = "ferrite_encoder_inputs_waiting";

/// 1 while the model labelled `model` is loaded, else 0 (gauge).
pub const MODEL_LOADED: &str = "ferrite_model_loaded";
/// Bytes of the memory budget the model labelled `model` holds (gauge).
pub const MODEL_MEMORY_BYTES: &str = "ferrite_model_memory_bytes";
/// Loads on demand, by `model` (counter).
pub const MODEL_LOADS_TOTAL: &str = "ferrite_model_loads_total";
/// Unloads, by `model` and `reason` (counter).
pub const MODEL_UNLOADS_TOTAL: &str = "ferrite_model_unloads_total";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (first call) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75,
                1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
            ];
            let tokens = [
                1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0,
            ];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BATCH_TOKENS.into()), &tokens))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(BATCH_SEQUENCES.into()), &tokens)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(ENCODER_BATCH_TOKENS.into()), &tokens)
                })
                .expect("static bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // A second recorder can only exist if someone else installed one; then we
            // keep rendering our own (empty) view rather than failing start-up.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            // Counters exist from the start (at 0), so dashboards and alerts see them
            // before the first event.
            // (The per-model ones start at 0 when their model is loaded:
            // `init_model_counters`.)
            for name in [CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL] {
                metrics::counter!(name).increment(0);
            }
            metrics::gauge!(HTTP_CONNECTIONS).set(0.0);
            handle
        })
        .clone()
}

/// Starts an LLM's counters at 0 under its `model` label, so dashboards see them
/// before its first event.
pub fn init_model_counters(model: &str) {
    for name in [
        PROMPT_TOKENS_TOTAL,
        GENERATION_TOKENS_TOTAL,
        PREEMPTIONS_TOTAL,
        PREFIX_CACHE_QUERIED_TOKENS_TOTAL,
        PREFIX_CACHE_HIT_TOKENS_TOTAL,
        CANCELLED_TOTAL,
        SPEC_DRAFT_TOKENS_TOTAL,
        SPEC_ACCEPTED_TOKENS_TOTAL,
    ] {
        metrics::counter!(name, "model" => model.to_string()).increment(0);
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(REQUESTS_RUNNING, "Sequences holding KV blocks");
    describe_gauge!(REQUESTS_WAITING, "Sequences waiting to be scheduled");
    describe_gauge!(KV_BLOCKS_USED, "KV cache blocks in use");
    describe_gauge!(KV_BLOCKS_TOTAL, "KV cache blocks in the pool");
    describe_histogram!(BATCH_TOKENS, "Tokens computed per engine step");
    describe_counter!(ENCODER_REQUESTS_TOTAL, "Encoder requests by route");
    describe_histogram!(ENCODER_BATCH_TOKENS, "Tokens per encoder batch");
    describe_histogram!(
        ENCODER_LATENCY_SECONDS,
        "Time from encoder job arrival to reply"
    );
    describe_gauge!(ENCODER_WAITING, "Encoder inputs queued and not yet run");
    describe_gauge!(MODEL_LOADED, "1 while the model is loaded");
    describe_gauge!(
        MODEL_MEMORY_BYTES,
        "Bytes of the memory budget the model holds"
    );
    describe_counter!(MODEL_LOADS_TOTAL, "Models loaded on demand");
    describe_counter!(
        MODEL_UNLOADS_TOTAL,
        "Models unloaded (idle keep-alive or to make room)"
    );
    describe_histogram!(BATCH_SEQUENCES, "Sequences per engine step");
    describe_histogram!(STEP_SECONDS, "Duration of one engine step");
    describe_histogram!(
        GRAMMAR_MASK_SECONDS,
        "Time to compute one step's grammar masks (overlaps the forward)"
    );
    describe_histogram!(
        GRAMMAR_STALL_SECONDS,
        "Time a step waited for grammar masks after its forward"
    );
    describe_histogram!(TTFT_SECONDS, "Time from request arrival to first token");
    describe_histogram!(ITL_SECONDS, "Time between consecutive tokens of a stream");
    describe_histogram!(REQUEST_SECONDS, "Time from request arrival to completion");
    describe_counter!(PROMPT_TOKENS_TOTAL, "Prompt tokens admitted");
    describe_counter!(GENERATION_TOKENS_TOTAL, "Tokens generated");
    describe_counter!(REQUESTS_TOTAL, "Finished HTTP requests by status");
    describe_counter!(
        PREEMPTIONS_TOTAL,
        "Sequences preempted for lack of KV blocks"
    );
    describe_counter!(
        PREFIX_CACHE_QUERIED_TOKENS_TOTAL,
        "Prompt tokens looked up in the prefix cache"
    );
    describe_counter!(
        PREFIX_CACHE_HIT_TOKENS_TOTAL,
        "Prompt tokens found in the prefix cache instead of computed"
    );
    describe_counter!(
        CANCELLED_TOTAL,
        "Sequences aborted because the client went away"
    );
    describe_counter!(
        SPEC_DRAFT_TOKENS_TOTAL,
        "Speculative (prompt-lookup) draft tokens verified"
    );
    describe_counter!(
        SPEC_ACCEPTED_TOKENS_TOTAL,
        "Speculative draft tokens accepted (each saved a decode step)"
    );
    describe_counter!(CACHE_HITS_TOTAL, "Response-cache lookups that hit");
    describe_counter!(CACHE_MISSES_TOTAL, "Response-cache lookups that missed");
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections");
    describe_gauge!(
        ADMISSION_PAUSED,
        "1 while admission of new sequences is paused for low device memory"
    );
    describe_gauge!(GPU_MEMORY_USED_BYTES, "GPU memory in use by all processes");
    describe_gauge!(GPU_MEMORY_TOTAL_BYTES, "GPU memory installed");
    describe_gauge!(
        GPU_UTILIZATION_PERCENT,
        "Percent of the last sample period a GPU kernel was running"
    );
    describe_gauge!(
        GPU_TEMPERATURE_CELSIUS,
        "GPU temperature in degrees Celsius"
    );
}
