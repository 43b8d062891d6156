//! The step time budget on plain counts: a long prompt is cut while a stream decodes,
//! runs at full size when none does, and always advances by at least a block.

use std::time::Duration;

use crate::engine::kv_manager::KvCacheManager;
use crate::engine::scheduler::{ScheduledSeq, Scheduler, SchedulerConfig, StepPlan};
use crate::engine::step_cost::StepWork;

const BUDGET: usize = 512;
const BLOCK: usize = 16;

fn sched(target_ms: f64) -> Scheduler {
    let mut s = Scheduler::new(
        SchedulerConfig {
            max_batched_tokens: BUDGET,
            max_num_seqs: 16,
            prefix_caching: false,
        },
        KvCacheManager::new(1000, BLOCK),
    );
    s.set_max_step_ms(target_ms);
    s
}

/// A machine where a step costs `a + 0.5 ms` per token (and a little per context).
fn cost(a: f64, plan: &StepPlan) -> f64 {
    let w = plan.scheduled.iter().fold(StepWork::default(), |w, s| {
        w.plus(StepWork::chunk(s.start, s.len))
    });
    a + 0.5 * w.tokens + 0.002 * w.pairs / 1000.0
}

/// Feeds the model steps of several shapes measured on that machine.
fn train(s: &mut Scheduler, a: f64) {
    for i in 0..24 {
        let seq = |id, start, len| ScheduledSeq {
            id,
            start,
            len,
            samples: false,
            draft: 0,
        };
        let mut plan = StepPlan::default();
        plan.scheduled.push(seq(100, 300 + i, 1));
        plan.scheduled.push(seq(101, 200 + i, 1));
        if i % 2 == 0 {
            plan.scheduled
                .push(seq(102, 64 * (i % 5), 32 + 16 * (i % 7)));
        }
        if i % 3 == 0 {
            plan.scheduled.push(seq(103, 0, BUDGET));
        }
        let ms = cost(a, &plan);
        s.observe_step(&plan, Duration::from_secs_f64(ms / 1e3));
    }
}

/// Runs steps until sequence `id` has computed its prompt (it then decodes).
fn run_prompt(s: &mut Scheduler, id: u64) {
    for _ in 0..100 {
        let plan = s.schedule();
        for sc in &plan.scheduled {
            if sc.samples {
                s.append_token(sc.id);
            }
        }
        if plan.scheduled.iter().any(|sc| sc.id == id && sc.samples) {
            return;
        }
    }
    panic!("{id} never finished its prompt");
}

/// The share of `id` in the next step.
fn len_of(plan: &StepPlan, id: u64) -> usize {
    plan.scheduled
        .iter()
        .find(|sc| sc.id == id)
        .map_or(0, |sc| sc.len)
}

#[test]
fn a_long_prompt_is_cut_to_the_time_target_while_a_stream_decodes() {
    let mut s = sched(100.0);
    train(&mut s, 5.0);
    s.add(1, 40);
    run_prompt(&mut s, 1);
    s.add(2, 900);
    let plan = s.schedule();
    assert_eq!(len_of(&plan, 1), 1, "the stream decodes");
    let chunk = len_of(&plan, 2);
    // (100 - 5 - 0.5) / 0.5 ≈ 189 tokens fit; the model predicts within a few percent.
    assert!((150..=200).contains(&chunk), "chunk {chunk}");
    let expected = s
        .step_cost()
        .predict(StepWork::chunk(40, 1).plus(StepWork::chunk(0, chunk)));
    assert!(expected.unwrap() <= 100.0, "{expected:?}");
    assert!(
        cost(5.0, &plan) < 105.0,
        "the step really stays near the target"
    );
}

#[test]
fn without_a_decoding_stream_the_prompt_takes_the_whole_budget() {
    let mut s = sched(100.0);
    train(&mut s, 5.0);
    s.add(2, 900);
    assert_eq!(len_of(&s.schedule(), 2), BUDGET);
}

#[test]
fn prefill_advances_by_a_block_when_decodes_fill_the_target() {
    let mut s = sched(100.0);
    // Every step costs 150 ms before any token: nothing fits, a block still runs.
    train(&mut s, 150.0);
    s.add(1, 40);
    run_prompt(&mut s, 1);
    s.add(2, 900);
    let plan = s.schedule();
    assert_eq!((len_of(&plan, 1), len_of(&plan, 2)), (1, BLOCK));
}

#[test]
fn off_or_untrained_the_budget_is_tokens_only() {
    for (target, trained) in [(0.0, true), (100.0, false)] {
        let mut s = sched(target);
        if trained {
            train(&mut s, 5.0);
        }
        s.add(1, 40);
        run_prompt(&mut s, 1);
        s.add(2, 900);
        let plan = s.schedule();
        assert_eq!(
            len_of(&plan, 2),
            BUDGET - 1,
            "target {target}, trained {trained}"
        );
    }
}

#[test]
fn two_prompts_share_one_cut() {
    let mut s = sched(100.0);
    train(&mut s, 5.0);
    s.add(1, 40);
    run_prompt(&mut s, 1);
    s.add(2, 900);
    s.add(3, 900);
    let plan = s.schedule();
    let (a, b) = (len_of(&plan, 2), len_of(&plan, 3));
    assert!(a + b <= 200 && a >= BLOCK, "{a} + {b}");
}

#[test]
fn drafts_shrink_while_a_prompt_waits_under_the_budget() {
    let mut s = sched(100.0);
    train(&mut s, 5.0);
    s.add(1, 40);
    run_prompt(&mut s, 1);
    assert!(!s.drafts_yield_to_prefill(), "only a decode runs");
    s.add(2, 900);
    assert!(s.drafts_yield_to_prefill(), "a prompt is queued");
    // Admitted and cut by the budget: its prompt is still being computed.
    let plan = s.schedule();
    assert!(len_of(&plan, 2) < 900);
    assert!(s.drafts_yield_to_prefill(), "the prompt is mid-prefill");
    run_prompt(&mut s, 2);
    assert!(!s.drafts_yield_to_prefill(), "both decode");
    // Without a step budget drafts never shrink.
    let mut off = sched(0.0);
    off.add(1, 40);
    run_prompt(&mut off, 1);
    off.add(2, 900);
    assert!(!off.drafts_yield_to_prefill());
}
