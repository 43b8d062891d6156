//! The KV block pool: a fixed number of equally sized blocks, a queue of free blocks,
//! and a reference count per block (full blocks are shared between sequences by the
//! prefix cache).
//!
//! Free blocks are handed out oldest-freed first, so a block whose contents the prefix
//! cache still knows is overwritten as late as possible; such a block can be taken
//! back off the free queue while still free ([`BlockPool::revive`]).
//!
//! Invariants: a block is free exactly when its reference count is 0, and then it has
//! exactly one live entry in the free queue (stale entries, left by `revive`, are
//! skipped: each entry carries the block's free epoch); `num_free` counts free blocks;
//! `allocate` is all-or-nothing and never panics; releasing a block that is not held is
//! reported as an error instead of corrupting the pool.

use std::collections::VecDeque;

/// Index of a block in the pool (and in every layer's K/V storage).
pub type BlockId = u32;

/// A release of a block nobody holds: a bookkeeping bug, reported rather than hidden.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("KV block {0} released while not held")]
pub struct DoubleFree(pub BlockId);

/// Fixed pool of KV blocks.
#[derive(Debug)]
pub struct BlockPool {
    ref_counts: Vec<u32>,
    /// Bumped each time a block is freed; a queue entry is live when it matches.
    epochs: Vec<u32>,
    free: VecDeque<(BlockId, u32)>,
    num_free: usize,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            ref_counts: vec![0; num_blocks],
            epochs: vec![0; num_blocks],
            free: (0..num_blocks as BlockId).map(|b| (b, 0)).collect(),
            num_free: num_blocks,
        }
    }

    /// Takes `n` free blocks (oldest freed first), or none at all when fewer than `n`
    /// are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut blocks = Vec::with_capacity(n);
        while blocks.len() < n {
            let (b, epoch) = self.free.pop_front().expect("num_free counts live entries");
            if self.ref_counts[b as usize] == 0 && self.epochs[b as usize] == epoch {
                self.ref_counts[b as usize] = 1;
                blocks.push(b);
            }
        }
        self.num_free -= n;
        Some(blocks)
    }

    /// Adds a holder to a held block (for sharing); false if the block is not held.
    pub fn share(&mut self, block: BlockId) -> bool {
        match self.ref_counts.get_mut(block as usize) {
            Some(rc) if *rc > 0 => {
                *rc += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds a holder to a block, held or free (a free one leaves the free queue with
    /// its contents intact); false if the block does not exist.
    pub fn revive(&mut self, block: BlockId) -> bool {
        match self.ref_counts.get_mut(block as usize) {
            Some(rc) => {
                if *rc == 0 {
                    // Its queue entry goes stale (the epoch moves on at its next free).
                    self.num_free -= 1;
                }
                *rc += 1;
                true
            }
            None => false,
        }
    }

    /// Drops one holder of each block; blocks nobody holds join the back of the free
    /// queue.
    pub fn release(&mut self, blocks: &[BlockId]) -> Result<(), DoubleFree> {
        let mut result = Ok(());
        for &b in blocks {
            match self.ref_counts.get_mut(b as usize) {
                Some(rc) if *rc > 0 => {
                    *rc -= 1;
                    if *rc == 0 {
                        let epoch = &mut self.epochs[b as usize];
                        *epoch = epoch.wrapping_add(1);
                        self.free.push_back((b, *epoch));
                        self.num_free += 1;
                    }
                }
                _ => result = Err(DoubleFree(b)),
            }
        }
        if self.free.len() > 2 * self.ref_counts.len() {
            self.compact();
        }
        result
    }

    /// Drops stale queue entries (bounded memory however often blocks are revived).
    fn compact(&mut self) {
        let (rc, ep) = (&self.ref_counts, &self.epochs);
        self.free
            .retain(|&(b, e)| rc[b as usize] == 0 && ep[b as usize] == e);
    }

    /// Free blocks.
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// Blocks held by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.ref_counts.len() - self.num_free
    }

    /// Blocks in the pool.
    pub fn num_total(&self) -> usize {
        self.ref_counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_all_or_nothing() {
        let mut pool = BlockPool::new(4);
        let a = pool.allocate(3).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(pool.allocate(2), None);
        assert_eq!(pool.num_free(), 1);
        assert_eq!(pool.num_used(), 3);
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 4);
        assert_eq!(pool.allocate(4).map(|v| v.len()), Some(4));
        assert_eq!(pool.allocate(1), None);
    }

    #[test]
    fn blocks_are_unique_while_held() {
        let mut pool = BlockPool::new(8);
        let mut all: Vec<_> = (0..4).flat_map(|_| pool.allocate(2).unwrap()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn double_free_is_reported_and_harmless() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate(1).unwrap();
        pool.release(&a).unwrap();
        assert_eq!(pool.release(&a), Err(DoubleFree(a[0])));
        assert_eq!(pool.num_free(), 2);
        assert_eq!(pool.release(&[99]), Err(DoubleFree(99)));
    }

    #[test]
    fn shared_block_frees_after_last_holder() {
        let mut pool = BlockPool::new(1);
        let a = pool.allocate(1).unwrap();
        assert!(pool.share(a[0]));
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 0);
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 1);
        assert!(!pool.share(a[0]));
    }

    #[test]
    fn revived_free_blocks_leave_the_queue_and_come_back_once() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate(3).unwrap();
        pool.release(&a).unwrap();
        assert_eq!(pool.num_free(), 3);
        // Revive the block freed first (the next to be handed out).
        assert!(pool.revive(a[0]));
        assert_eq!((pool.num_free(), pool.num_used()), (2, 1));
        let b = pool.allocate(2).unwrap();
        assert!(
            !b.contains(&a[0]),
            "a revived block is not handed out again"
        );
        assert_eq!(pool.allocate(1), None);
        pool.release(&[a[0]]).unwrap();
        pool.release(&b).unwrap();
        assert_eq!(pool.num_free(), 3);
        let mut all = pool.allocate(3).unwrap();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2], "each block exactly once");
        assert!(!pool.revive(7));
    }

    #[test]
    fn blocks_are_handed_out_oldest_freed_first() {
        let mut pool = BlockPool::new(3);
        let a = pool.allocate(3).unwrap();
        pool.release(&[a[2]]).unwrap();
        pool.release(&[a[0]]).unwrap();
        pool.release(&[a[1]]).unwrap();
        assert_eq!(pool.allocate(3).unwrap(), vec![a[2], a[0], a[1]]);
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut pool = BlockPool::new(2);
        let a = pool.allocate(1).unwrap();
        for _ in 0..100 {
            pool.release(&a).unwrap();
            assert!(pool.revive(a[0]));
        }
        assert!(pool.free.len() <= 4 + 1);
        pool.release(&a).unwrap();
        assert_eq!(pool.allocate(2).map(|v| v.len()), Some(2));
    }
}
