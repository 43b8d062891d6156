use super::super::{Scheduler, SchedulerConfig, StepPlan};
use crate::engine::kv_manager::{KvCacheManager, SeqId};

fn sched(blocks: usize, block_size: usize, budget: usize) -> Scheduler {
    Scheduler::new(
        SchedulerConfig {
            max_batched_tokens: budget,
            max_num_seqs: 16,
            prefix_caching: false,
        },
        KvCacheManager::new(blocks, block_size),
    )
}

/// Runs a step; every sampling sequence accepts `accept` of its drafts (at most what
/// it had) and appends that many tokens plus the one sampled after them.
fn step(s: &mut Scheduler, accept: usize) -> StepPlan {
    let plan = s.schedule();
    for sc in &plan.scheduled {
        if sc.samples {
            let a = accept.min(sc.draft);
            if sc.draft > 0 {
                s.settle_draft(sc.id, a);
            }
            for _ in 0..=a {
                s.append_token(sc.id);
            }
        }
    }
    plan
}

/// Adds sequence `id` with a `prompt`-token prompt and steps until it decodes.
fn start(s: &mut Scheduler, id: SeqId, prompt: usize) {
    s.add(id, prompt);
    until_decoding(s, id);
}

fn until_decoding(s: &mut Scheduler, id: SeqId) {
    while !s.propose_draft(id, 1) {
        step(s, 0);
    }
    s.cut_draft(id, 0);
}

#[test]
fn a_draft_is_computed_with_its_token_and_settles_to_the_accepted_prefix() {
    let mut s = sched(64, 4, 64);
    start(&mut s, 1, 6);
    // 7 known tokens (6 prompt + 1 sampled), 6 computed.
    assert!(s.propose_draft(1, 3));
    let p = step(&mut s, 2);
    assert_eq!(p.scheduled.len(), 1);
    let sc = p.scheduled[0];
    assert_eq!((sc.start, sc.len, sc.draft, sc.samples), (6, 4, 3, true));
    // Accepted 2 of 3, so 6 + 1 + 2 = 9 computed and 10 known: one to compute next.
    let p = step(&mut s, 0);
    let sc = p.scheduled[0];
    assert_eq!((sc.start, sc.len, sc.draft), (9, 1, 0));
    assert_eq!(s.kv().block_table(1).len(), 3);
    // 10 computed, 11 known; 5 drafts reach position 15 (4 blocks), all rejected: the
    // block that held only rejected positions goes back to the pool.
    assert!(s.propose_draft(1, 5));
    let p = step(&mut s, 0);
    assert_eq!((p.scheduled[0].len, p.scheduled[0].draft), (6, 5));
    assert_eq!(
        s.kv().block_table(1).len(),
        3,
        "11 computed + the next token"
    );
    assert_eq!(s.kv().num_used(), 3);
}

#[test]
fn drafts_are_refused_unless_the_sequence_decodes() {
    let mut s = sched(64, 4, 4);
    s.add(1, 10);
    assert!(!s.propose_draft(1, 2), "waiting");
    step(&mut s, 0);
    assert!(!s.propose_draft(1, 2), "still prefilling");
    until_decoding(&mut s, 1);
    assert!(!s.propose_draft(1, 0), "empty draft");
    assert!(s.propose_draft(1, 2));
    assert!(!s.propose_draft(1, 2), "already drafted");
    assert!(!s.propose_draft(7, 2), "unknown");
}

#[test]
fn drafts_are_cut_to_the_budget_and_unscheduled_ones_dropped() {
    let mut s = sched(64, 4, 3);
    start(&mut s, 1, 2);
    start(&mut s, 2, 2);
    assert!(s.propose_draft(1, 5));
    assert!(s.propose_draft(2, 5));
    let p = s.schedule();
    // Sequence 1 takes the whole budget: its token and 2 drafts; 2 gets nothing.
    assert_eq!(p.scheduled.len(), 1);
    assert_eq!((p.scheduled[0].len, p.scheduled[0].draft), (3, 2));
    assert_eq!(s.draft_len(2), 0, "an unscheduled draft is dropped");
    assert_eq!(s.draft_len(1), 2);
}

#[test]
fn a_draft_never_preempts_and_shrinks_to_the_free_blocks() {
    // 3 blocks of 4: sequence 1 holds 2 (6 computed, 7 known; it decoded once while
    // sequence 2 started), sequence 2 holds 1 (2 computed, 3 known).
    let mut s = sched(3, 4, 64);
    start(&mut s, 1, 5);
    start(&mut s, 2, 2);
    assert_eq!(s.kv().num_free(), 0);
    assert!(s.propose_draft(1, 4));
    let p = step(&mut s, 4);
    assert!(p.preempted.is_empty(), "drafts preempted {:?}", p.preempted);
    let one = p.scheduled.iter().find(|sc| sc.id == 1).unwrap();
    // Position 6 plus one draft at 7 fills the second block; more would need a third.
    assert_eq!((one.len, one.draft), (2, 1));
    assert_eq!(p.scheduled.len(), 2, "sequence 2 still decodes");
}

#[test]
fn drafted_workloads_never_leak_blocks() {
    let mut s = sched(40, 4, 24);
    let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<SeqId> = Vec::new();
    for id in 0..200u64 {
        if live.len() < 6 {
            s.add(id, 1 + (next() % 20) as usize);
            live.push(id);
        }
        for &l in &live {
            s.propose_draft(l, (next() % 6) as usize);
        }
        let accept = (next() % 4) as usize;
        let plan = s.schedule();
        for sc in &plan.scheduled {
            assert!(s.kv().block_table(sc.id).len() * 4 >= sc.start + sc.len);
            assert!(sc.draft == 0 || sc.samples);
            if sc.samples {
                let a = accept.min(sc.draft);
                if sc.draft > 0 {
                    s.settle_draft(sc.id, a);
                }
                for _ in 0..=a {
                    s.append_token(sc.id);
                }
            }
        }
        assert!(
            live.iter().all(|&l| s.draft_len(l) == 0),
            "a draft outlived its step"
        );
        if next() % 3 == 0 && !live.is_empty() {
            let gone = live.remove((next() as usize) % live.len());
            s.remove(gone);
        }
    }
    for id in live {
        s.remove(id);
    }
    assert_eq!(s.kv().num_used(), 0);
    assert!(s.is_idle());
}
