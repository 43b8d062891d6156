//! The KV block pool: a fixed number of equally sized blocks, a free list, and a
//! reference count per block (so full blocks can later be shared between sequences).
//!
//! Invariants: a block is on the free list exactly when its reference count is 0;
//! `allocate` is all-or-nothing and never panics; releasing a block that is not held
//! is reported as an error instead of corrupting the pool.

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
    free: Vec<BlockId>,
}

impl BlockPool {
    /// A pool of `num_blocks` free blocks.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            ref_counts: vec![0; num_blocks],
            // Reversed so that blocks are handed out from 0 upwards.
            free: (0..num_blocks as BlockId).rev().collect(),
        }
    }

    /// Takes `n` free blocks, or none at all when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free.len() {
            return None;
        }
        let blocks = self.free.split_off(self.free.len() - n);
        for &b in &blocks {
            self.ref_counts[b as usize] = 1;
        }
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

    /// Drops one holder of each block; blocks nobody holds return to the free list.
    pub fn release(&mut self, blocks: &[BlockId]) -> Result<(), DoubleFree> {
        let mut result = Ok(());
        for &b in blocks {
            match self.ref_counts.get_mut(b as usize) {
                Some(rc) if *rc > 0 => {
                    *rc -= 1;
                    if *rc == 0 {
                        self.free.push(b);
                    }
                }
                _ => result = Err(DoubleFree(b)),
            }
        }
        result
    }

    /// Blocks on the free list.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Blocks held by at least one sequence.
    pub fn num_used(&self) -> usize {
        self.ref_counts.len() - self.free.len()
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
}
