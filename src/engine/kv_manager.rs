//! The KV cache manager: per-sequence block tables over the block pool, and the
//! mapping from (sequence, position) to a cache slot.
//!
//! Invariants: a sequence's table holds exactly the blocks it was granted, in position
//! order; `ensure` grows a table all-or-nothing; `free` returns every block of a
//! sequence to the pool and forgets the sequence.

use std::collections::HashMap;

use super::block_pool::{BlockId, BlockPool};

/// Identifier of one sequence inside the engine.
pub type SeqId = u64;

/// Block tables of all sequences holding KV memory.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    tables: HashMap<SeqId, Vec<BlockId>>,
}

impl KvCacheManager {
    /// A manager over `num_blocks` blocks of `block_size` tokens each.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            tables: HashMap::new(),
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// Grows `seq`'s table so it can hold `num_tokens` tokens. False (and nothing
    /// changed) when the pool has too few free blocks.
    pub fn ensure(&mut self, seq: SeqId, num_tokens: usize) -> bool {
        let have = self.tables.get(&seq).map_or(0, Vec::len);
        let need = self.blocks_for(num_tokens).saturating_sub(have);
        if need == 0 {
            return true;
        }
        match self.pool.allocate(need) {
            Some(blocks) => {
                self.tables.entry(seq).or_default().extend(blocks);
                true
            }
            None => false,
        }
    }

    /// Whether `extra` more blocks could be granted now.
    pub fn can_allocate(&self, extra: usize) -> bool {
        self.pool.num_free() >= extra
    }

    /// Blocks `seq` still needs to hold `num_tokens` tokens.
    pub fn missing_blocks(&self, seq: SeqId, num_tokens: usize) -> usize {
        let have = self.tables.get(&seq).map_or(0, Vec::len);
        self.blocks_for(num_tokens).saturating_sub(have)
    }

    /// Releases all of `seq`'s blocks. Freeing an unknown sequence is a no-op.
    pub fn free(&mut self, seq: SeqId) {
        if let Some(blocks) = self.tables.remove(&seq)
            && let Err(e) = self.pool.release(&blocks)
        {
            tracing::error!(seq, "KV bookkeeping error: {e}");
        }
    }

    /// `seq`'s block table (empty for a sequence holding none).
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables.get(&seq).map_or(&[], Vec::as_slice)
    }

    /// Cache slot of `seq`'s token at `pos`; `None` if that block is not held.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Option<usize> {
        let block = *self.block_table(seq).get(pos / self.block_size)?;
        Some(block as usize * self.block_size + pos % self.block_size)
    }

    /// Blocks in use.
    pub fn num_used(&self) -> usize {
        self.pool.num_used()
    }

    /// Free blocks.
    pub fn num_free(&self) -> usize {
        self.pool.num_free()
    }

    /// Blocks in the pool.
    pub fn num_total(&self) -> usize {
        self.pool.num_total()
    }

    /// Sequences holding blocks.
    pub fn num_sequences(&self) -> usize {
        self.tables.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_grows_tables_and_maps_slots() {
        let mut kv = KvCacheManager::new(4, 16);
        assert!(kv.ensure(1, 17));
        assert_eq!(kv.block_table(1).len(), 2);
        assert!(kv.ensure(1, 32), "still two blocks");
        assert_eq!(kv.num_used(), 2);
        let t = kv.block_table(1).to_vec();
        assert_eq!(kv.slot(1, 0), Some(t[0] as usize * 16));
        assert_eq!(kv.slot(1, 17), Some(t[1] as usize * 16 + 1));
        assert_eq!(kv.slot(1, 32), None);
    }

    #[test]
    fn exhaustion_changes_nothing_and_free_returns_all() {
        let mut kv = KvCacheManager::new(3, 4);
        assert!(kv.ensure(1, 8));
        assert!(!kv.ensure(2, 8), "only one block left");
        assert_eq!(kv.block_table(2).len(), 0);
        assert_eq!(kv.num_used(), 2);
        assert!(kv.ensure(2, 4));
        kv.free(1);
        kv.free(2);
        kv.free(3);
        assert_eq!(kv.num_used(), 0);
        assert_eq!(kv.num_sequences(), 0);
    }
}
