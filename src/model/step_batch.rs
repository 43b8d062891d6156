//! Batches for sequences driven by hand (the selftest's model check, `ferrite bench`):
//! each [`HandSeq`] has its tokens, how many are computed and its block table; a
//! [`step`] computes the next `take[i]` tokens of sequence i in one flat
//! [`BatchInput`], asking for logits only of sequences whose known tokens are then all
//! computed.
//!
//! Invariant: slots follow the block table (`block * block_size + offset`), so the
//! table must cover every position the step writes (checked: an error, not a panic).

use anyhow::{Result, ensure};

use super::paged_attention::SeqSpan;
use super::transformer::BatchInput;

/// One hand-driven sequence.
#[derive(Debug, Clone, Default)]
pub struct HandSeq {
    /// Prompt and generated tokens so far.
    pub tokens: Vec<u32>,
    /// Tokens whose K/V is in the cache.
    pub computed: usize,
    /// Its KV blocks, in position order.
    pub blocks: Vec<u32>,
}

/// The batch computing `take[i]` more tokens of `seqs[i]` (0: not scheduled).
pub fn step(seqs: &[HandSeq], take: &[usize], block_size: usize) -> Result<BatchInput> {
    ensure!(take.len() == seqs.len(), "one count per sequence");
    let mut b = BatchInput::default();
    for (i, (s, &n)) in seqs.iter().zip(take).enumerate() {
        if n == 0 {
            continue;
        }
        let end = s.computed + n;
        ensure!(
            end <= s.tokens.len(),
            "sequence {i}: {end} tokens asked, {} known",
            s.tokens.len()
        );
        ensure!(
            end <= s.blocks.len() * block_size,
            "sequence {i}: {} blocks do not hold {end} tokens",
            s.blocks.len()
        );
        let offset = b.tokens.len();
        for p in s.computed..end {
            b.tokens.push(s.tokens[p]);
            b.positions.push(p);
            b.slots
                .push(s.blocks[p / block_size] as usize * block_size + p % block_size);
        }
        b.spans.push(SeqSpan {
            offset,
            len: n,
            start_pos: s.computed,
            block_table: s.blocks.clone(),
        });
        if end == s.tokens.len() {
            b.logits_rows.push(b.tokens.len() - 1);
        }
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_block_tables_and_logits_only_for_finished_prompts() {
        let seqs = vec![
            HandSeq {
                tokens: (0..20).collect(),
                computed: 0,
                blocks: vec![3, 1],
            },
            HandSeq {
                tokens: vec![7, 8],
                computed: 1,
                blocks: vec![0],
            },
        ];
        let b = step(&seqs, &[18, 1], 16).unwrap();
        assert_eq!(b.tokens.len(), 19);
        assert_eq!(b.slots[0], 48);
        assert_eq!(b.slots[16], 16); // position 16: block 1, offset 0
        assert_eq!(b.slots[18], 1);
        assert_eq!(b.logits_rows, vec![18]); // sequence 0 is not done
        assert_eq!(b.spans[1].start_pos, 1);
        assert!(step(&seqs, &[21, 0], 16).is_err());
        let short = [HandSeq {
            tokens: vec![0; 40],
            computed: 0,
            blocks: vec![0, 1],
        }];
        assert!(step(&short, &[40], 16).is_err());
    }
}
