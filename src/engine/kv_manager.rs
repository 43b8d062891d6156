//! The KV cache manager: per-sequence block tables over the block pool, the mapping
//! from (sequence, position) to a cache slot, and the prefix cache.
//!
//! Prefix cache: a full block of prompt tokens whose K/V have been computed is
//! registered under a hash of all tokens from the start of the sequence to the end of
//! that block ([`block_hashes`]: a SHA-256 chain, so equal hashes mean equal token
//! prefixes, also against crafted inputs). A new sequence whose prompt starts with
//! registered blocks takes them into its table instead of recomputing them. Registered
//! blocks stay findable after their last holder frees them, until the pool hands them
//! out again (oldest freed first).
//!
//! Invariants: a sequence's table holds exactly the blocks it was granted, in position
//! order; `ensure` grows a table all-or-nothing; `free` returns every block of a
//! sequence to the pool and forgets the sequence; a block is in the prefix map only
//! while its contents are the K/V of the prefix it is registered under (it leaves the
//! map when the pool hands it out for new contents); shared blocks are full and are
//! never written (a sequence only writes positions past the blocks it took).

use std::collections::HashMap;

use sha2::{Digest, Sha256};

use super::block_pool::{BlockId, BlockPool};

/// Identity of a token prefix that ends at a block boundary.
pub type BlockHash = u128;

/// Hash of each full block of `tokens`: entry `i` identifies `tokens[..(i + 1) * bs]`.
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<BlockHash> {
    let mut parent = [0u8; 16];
    tokens
        .chunks_exact(block_size)
        .map(|block| {
            let mut h = Sha256::new();
            h.update(parent);
            for t in block {
                h.update(t.to_le_bytes());
            }
            let digest = h.finalize();
            parent.copy_from_slice(&digest[..16]);
            u128::from_le_bytes(parent)
        })
        .collect()
}

/// Identifier of one sequence inside the engine.
pub type SeqId = u64;

/// Block tables of all sequences holding KV memory.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    tables: HashMap<SeqId, Vec<BlockId>>,
    /// Registered prefixes (empty when prefix caching is off).
    prefixes: HashMap<BlockHash, BlockId>,
    /// What each block is registered under, if anything.
    registered: Vec<Option<BlockHash>>,
}

impl KvCacheManager {
    /// A manager over `num_blocks` blocks of `block_size` tokens each.
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block size must be positive");
        Self {
            pool: BlockPool::new(num_blocks),
            block_size,
            tables: HashMap::new(),
            prefixes: HashMap::new(),
            registered: vec![None; num_blocks],
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
                for &b in &blocks {
                    // New contents: whatever prefix the block held is gone.
                    if let Some(h) = self.registered[b as usize].take() {
                        self.prefixes.remove(&h);
                    }
                }
                self.tables.entry(seq).or_default().extend(blocks);
                true
            }
            None => false,
        }
    }

    /// For a sequence holding no blocks: takes the registered blocks matching the
    /// longest run of `hashes` from the start (at most `max_blocks`) into its table.
    /// Returns how many it took.
    pub fn take_prefix(&mut self, seq: SeqId, hashes: &[BlockHash], max_blocks: usize) -> usize {
        if self.tables.get(&seq).is_some_and(|t| !t.is_empty()) {
            return 0;
        }
        let mut taken = Vec::new();
        for h in hashes.iter().take(max_blocks) {
            let Some(&b) = self.prefixes.get(h) else {
                break;
            };
            if !self.pool.revive(b) {
                break;
            }
            taken.push(b);
        }
        let n = taken.len();
        if n > 0 {
            self.tables.insert(seq, taken);
        }
        n
    }

    /// Registers `seq`'s first blocks, whose K/V are computed, under `hashes` (one per
    /// block, from the start). A prefix already registered keeps its block.
    pub fn register(&mut self, seq: SeqId, hashes: &[BlockHash]) {
        let Some(table) = self.tables.get(&seq) else {
            return;
        };
        for (&b, &h) in table.iter().zip(hashes) {
            if self.registered[b as usize].is_none() && !self.prefixes.contains_key(&h) {
                self.prefixes.insert(h, b);
                self.registered[b as usize] = Some(h);
            }
        }
    }

    /// Prefixes registered now (held or free).
    pub fn num_cached_blocks(&self) -> usize {
        self.prefixes.len()
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

    /// Shrinks `seq`'s table to the blocks that hold its first `num_tokens` tokens,
    /// releasing the rest (the positions of rejected speculative drafts).
    pub fn truncate(&mut self, seq: SeqId, num_tokens: usize) {
        let keep = self.blocks_for(num_tokens);
        let Some(table) = self.tables.get_mut(&seq) else {
            return;
        };
        if table.len() <= keep {
            return;
        }
        let surplus = table.split_off(keep);
        if let Err(e) = self.pool.release(&surplus) {
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

    #[test]
    fn hashes_identify_whole_prefixes() {
        let a = block_hashes(&[1, 2, 3, 4, 5, 6, 7], 2);
        assert_eq!(a.len(), 3, "only full blocks");
        let b = block_hashes(&[1, 2, 3, 4, 9, 9], 2);
        assert_eq!(a[..2], b[..2]);
        assert_ne!(a[2], b[2]);
        let c = block_hashes(&[0, 2, 3, 4], 2);
        assert_ne!(a[1], c[1], "a block's hash covers every token before it");
    }

    #[test]
    fn registered_prefixes_are_shared_then_survive_until_reused() {
        let mut kv = KvCacheManager::new(4, 2);
        let h = block_hashes(&[1, 2, 3, 4, 5], 2);
        assert!(kv.ensure(1, 5));
        kv.register(1, &h);
        assert_eq!(kv.num_cached_blocks(), 2);
        let first = kv.block_table(1)[..2].to_vec();
        // A second sequence with the same prompt shares both full blocks.
        assert_eq!(kv.take_prefix(2, &h, 2), 2);
        assert_eq!(kv.block_table(2), &first[..]);
        assert_eq!(kv.num_used(), 3, "shared blocks count once");
        assert!(kv.ensure(2, 5));
        assert_eq!(kv.num_used(), 4);
        kv.free(1);
        kv.free(2);
        assert_eq!(kv.num_used(), 0);
        // Freed but still registered: a third sequence finds them.
        assert_eq!(kv.take_prefix(3, &h, 1), 1, "capped by max_blocks");
        assert_eq!(kv.block_table(3), &first[..1]);
        kv.free(3);
        // Handing every block out again forgets the prefixes.
        assert!(kv.ensure(4, 8));
        assert_eq!(kv.num_cached_blocks(), 0);
        kv.free(4);
        assert_eq!(kv.take_prefix(5, &h, 2), 0);
        assert_eq!(kv.num_used(), 0);
    }
}
