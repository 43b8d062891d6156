//! Where the time of one engine step goes: times the phases of a forward (through
//! `CpuModel::forward_profiled`), plus sampling and detokenization, on the default model
//! (or `FERRITE_BENCH_MODEL=PATH`), for decode steps of 1, 8 and 32 sequences at a
//! context of 256 tokens and for a 512-token prefill chunk from position 0 and one
//! from position 512 (the second chunk of a long prompt).
//!
//! Each scenario runs `REPS` times after a warm-up; every phase reports its minimum over
//! the runs (the machine is shared, so the minimum is the least noisy estimate), and the
//! step total is the minimum over runs of the whole step.
//!
//! `cargo bench --bench step_breakdown [-- --reps N]`.

use std::time::{Duration, Instant};

use ferrite::engine::sampler::SamplerState;
use ferrite::engine::text_stream::TextStream;
use ferrite::engine::types::SamplingParams;
use ferrite::model::loader::load_gguf;
use ferrite::model::paged_attention::{PagedKvCache, SeqSpan};
use ferrite::model::source::DefaultModel;
use ferrite::model::tokenizer::ModelTokenizer;
use ferrite::model::transformer::{BatchInput, CpuModel, Phase, StepProfile};

const BLOCK: usize = 16;
/// Context every decode sequence already has in the cache.
const CONTEXT: usize = 256;
const PREFILL: usize = 512;

/// One timed step: phases of the forward, then sampling and detokenization.
#[derive(Default, Clone)]
struct Sample {
    forward: StepProfile,
    sampling: Duration,
    detok: Duration,
    total: Duration,
}

fn token(i: usize, vocab: usize) -> u32 {
    ((i * 7919 + 13) % vocab) as u32
}

/// `b` decode rows at position `CONTEXT`, all sharing the prefix in blocks
/// `0..CONTEXT / BLOCK` (written once by [`fill_prefix`]) and each owning one more block.
fn decode_batch(b: usize, vocab: usize) -> BatchInput {
    let prefix: Vec<u32> = (0..(CONTEXT / BLOCK) as u32).collect();
    let mut input = BatchInput::default();
    for s in 0..b {
        let own = (CONTEXT / BLOCK + s) as u32;
        let mut table = prefix.clone();
        table.push(own);
        input.spans.push(SeqSpan {
            offset: s,
            len: 1,
            start_pos: CONTEXT,
            block_table: table,
        });
        input.tokens.push(token(s, vocab));
        input.positions.push(CONTEXT);
        input.slots.push(own as usize * BLOCK);
        input.logits_rows.push(s);
    }
    input
}

/// Tokens `start..start + len` of one sequence whose blocks are consecutive from
/// `first_block` (the earlier positions already in the cache).
fn prefill_batch(len: usize, start: usize, first_block: usize, vocab: usize) -> BatchInput {
    let table: Vec<u32> = (0..(start + len).div_ceil(BLOCK))
        .map(|i| (first_block + i) as u32)
        .collect();
    BatchInput {
        tokens: (start..start + len)
            .map(|i| token(i + 1000, vocab))
            .collect(),
        positions: (start..start + len).collect(),
        slots: (start..start + len)
            .map(|p| (first_block * BLOCK) + p)
            .collect(),
        spans: vec![SeqSpan {
            offset: 0,
            len,
            start_pos: start,
            block_table: table,
        }],
        logits_rows: vec![len - 1],
    }
}

fn run_step(
    model: &CpuModel,
    tok: &ModelTokenizer,
    cache: &mut PagedKvCache,
    input: &BatchInput,
) -> Sample {
    let mut s = Sample::default();
    let t0 = Instant::now();
    let logits = model
        .forward_profiled(input, cache, Some(&mut s.forward))
        .expect("forward");
    let t1 = Instant::now();
    let params = SamplingParams {
        temperature: 0.0,
        ..SamplingParams::default()
    };
    let mut ids = Vec::with_capacity(logits.len());
    for mut row in logits {
        let mut st = SamplerState::new(Some(1));
        ids.push(st.sample(&mut row, &params).id);
    }
    let t2 = Instant::now();
    let mut text = 0;
    for &id in &ids {
        let mut ts = TextStream::new(&[]);
        text += ts.push(tok.token_bytes(id)).text.len();
    }
    std::hint::black_box(text);
    let t3 = Instant::now();
    s.sampling = t2 - t1;
    s.detok = t3 - t2;
    s.total = t3 - t0;
    s
}

fn min_of(samples: &[Sample], f: impl Fn(&Sample) -> Duration) -> Duration {
    samples.iter().map(f).min().unwrap_or_default()
}

fn report(name: &str, rows: usize, samples: &[Sample]) {
    let total = min_of(samples, |s| s.total);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "\n### {name} ({rows} rows): step {:.2} ms (min of {}), {:.0} rows/s",
        ms(total),
        samples.len(),
        rows as f64 / total.as_secs_f64()
    );
    println!("| phase | ms | % of step |");
    println!("|---|---|---|");
    let line = |label: &str, d: Duration| {
        println!(
            "| {label} | {:.3} | {:.1}% |",
            ms(d),
            100.0 * ms(d) / ms(total)
        );
    };
    for p in Phase::ALL {
        line(p.name(), min_of(samples, |s| s.forward.get(p)));
    }
    line("sampling (greedy)", min_of(samples, |s| s.sampling));
    line("detokenization", min_of(samples, |s| s.detok));
}

fn main() {
    // As the `ferrite` binary does first thing (step buffers reused from the heap).
    ferrite::malloc_tuning::keep_buffers_in_heap();
    let reps = std::env::args()
        .skip_while(|a| a != "--reps")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(10usize);
    let path = match std::env::var_os("FERRITE_BENCH_MODEL") {
        Some(p) => p.into(),
        None => {
            DefaultModel::ensure(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
                .expect("default model")
        }
    };
    let loaded = load_gguf(&path).expect("model loads");
    let (model, tok) = (loaded.llama, loaded.tokenizer);
    let cfg = model.config().clone();
    println!(
        "model {} ({} layers, width {}, ffn {}, heads {}/{}, vocab {}), rayon threads {}",
        path.display(),
        cfg.n_layer,
        cfg.n_embd,
        cfg.n_ff,
        cfg.n_head,
        cfg.n_kv_head,
        cfg.vocab_size,
        rayon::current_num_threads()
    );
    let prefill_first = CONTEXT / BLOCK + 32;
    let blocks = prefill_first + 2 * PREFILL / BLOCK;
    let mut cache = PagedKvCache::new(cfg.n_layer, blocks, BLOCK, cfg.n_kv_head, cfg.head_dim);
    // The shared 256-token prefix every decode sequence attends to.
    let prefix = prefill_batch(CONTEXT, 0, 0, cfg.vocab_size);
    model.forward(&prefix, &mut cache).expect("prefix");
    let scenarios: Vec<(String, BatchInput)> = [1, 8, 32]
        .into_iter()
        .map(|b| {
            (
                format!("decode, batch {b}, context {CONTEXT}"),
                decode_batch(b, cfg.vocab_size),
            )
        })
        .chain([
            (
                format!("prefill chunk of {PREFILL} tokens"),
                prefill_batch(PREFILL, 0, prefill_first, cfg.vocab_size),
            ),
            // The second chunk of a long (RAG-sized) prompt: attention over 512 to
            // 1,023 earlier positions.
            (
                format!("prefill chunk of {PREFILL} tokens after {PREFILL}"),
                prefill_batch(PREFILL, PREFILL, prefill_first, cfg.vocab_size),
            ),
        ])
        .collect();
    for (name, input) in &scenarios {
        for _ in 0..2 {
            run_step(&model, &tok, &mut cache, input);
        }
        let samples: Vec<Sample> = (0..reps)
            .map(|_| run_step(&model, &tok, &mut cache, input))
            .collect();
        report(name, input.tokens.len(), &samples);
    }
}
