//! The KV cache on the device, writes into it by slot mapping, and paged attention over
//! it for a flat batch of prefill chunks and decodes, scored by the CPU's [`ScoreRule`]
//! (scale, optional tanh soft-cap, optional sliding window).

use super::{Result, check, int, ptr};
use crate::device::cpu::attention::ScoreRule;
use crate::device::kernels::buffer::{
    DevBuf, DevIndex, Device, DeviceError, DeviceExt, KernelArg, LaunchDims,
};
use crate::model::paged_attention::{HeadShape, SeqSpan};

/// One layer's K and V cache on the device: `slots` x `kv_width` f16 values each.
#[derive(Debug)]
pub struct DevKvLayer {
    /// Keys, f16 bits.
    pub k: DevBuf<u16>,
    /// Values, f16 bits.
    pub v: DevBuf<u16>,
    /// `n_kv_head * head_dim`.
    pub kv_width: usize,
    /// Tokens per block.
    pub block_size: usize,
}

impl DevKvLayer {
    /// A zeroed layer of `num_blocks` blocks.
    pub fn alloc(
        dev: &dyn Device,
        num_blocks: usize,
        block_size: usize,
        kv_width: usize,
    ) -> Result<Self> {
        let n = num_blocks * block_size * kv_width;
        Ok(Self {
            k: dev.alloc(n)?,
            v: dev.alloc(n)?,
            kv_width,
            block_size,
        })
    }

    /// Token slots.
    pub fn slots(&self) -> usize {
        self.k.len() / self.kv_width.max(1)
    }

    /// Blocks.
    pub fn num_blocks(&self) -> usize {
        self.slots() / self.block_size.max(1)
    }
}

/// Where K and V sit in the rows written to the cache.
#[derive(Debug, Clone, Copy)]
pub struct KvColumns {
    /// Floats per row.
    pub stride: usize,
    /// First column of K.
    pub k_off: usize,
    /// First column of V.
    pub v_off: usize,
}

/// Writes K and V of `rows` rows of `qkv` into `cache` at `slots` (negative: skip).
pub fn kv_write(
    dev: &dyn Device,
    qkv: &DevBuf<f32>,
    cols: KvColumns,
    slots: &DevIndex,
    cache: &mut DevKvLayer,
    rows: usize,
) -> Result<()> {
    const OP: &str = "kv_write";
    let w = cache.kv_width;
    check(
        cols.k_off + w <= cols.stride && cols.v_off + w <= cols.stride,
        OP,
        || {
            format!(
                "K at {} and V at {} need {w} columns in rows of {}",
                cols.k_off, cols.v_off, cols.stride
            )
        },
    )?;
    check(
        qkv.len() >= rows * cols.stride && slots.len() >= rows,
        OP,
        || {
            format!(
                "{rows} rows: qkv has {} floats, slots {}",
                qkv.len(),
                slots.len()
            )
        },
    )?;
    check(
        slots.min() >= -1 && (slots.max() as i64) < cache.slots() as i64,
        OP,
        || {
            format!(
                "slots must be in -1..{}, got {}..={}",
                cache.slots(),
                slots.min(),
                slots.max()
            )
        },
    )?;
    if rows * w == 0 {
        return Ok(());
    }
    let args = [
        ptr(qkv),
        int(cols.stride, OP, "stride")?,
        int(cols.k_off, OP, "k_off")?,
        int(cols.v_off, OP, "v_off")?,
        ptr(slots.buf()),
        ptr(&cache.k),
        ptr(&cache.v),
        int(w, OP, "kv_width")?,
        int(rows, OP, "rows")?,
    ];
    // SAFETY: slots bounded by the cache, columns by the rows.
    unsafe { dev.launch("kv_write", LaunchDims::cover(rows * w, 256), &args) }
}

/// A flat batch's attention metadata on the device: per query row its position and
/// sequence, and the sequences' block tables padded to one width.
#[derive(Debug)]
pub struct AttnBatch {
    /// `None` until the first upload; later uploads reuse the buffers.
    parts: Option<[DevIndex; 3]>,
    /// Split attention's per-slice sums and (max, denominator), grown on demand.
    part_acc: Option<DevBuf<f32>>,
    part_ml: Option<DevBuf<f32>>,
    max_blocks: usize,
    block_size: usize,
    rows: usize,
}

impl AttnBatch {
    /// From the CPU path's spans (rows in span order, `offset`s consecutive from 0).
    pub fn upload(dev: &dyn Device, spans: &[SeqSpan], block_size: usize) -> Result<Self> {
        let mut b = Self {
            parts: None,
            part_acc: None,
            part_ml: None,
            max_blocks: 0,
            block_size,
            rows: 0,
        };
        b.refill(dev, spans, block_size)?;
        Ok(b)
    }

    /// [`Self::upload`] into this batch's buffers (allocating only when they are too
    /// small), for the next step.
    pub fn refill(&mut self, dev: &dyn Device, spans: &[SeqSpan], block_size: usize) -> Result<()> {
        const OP: &str = "attention batch";
        check(block_size > 0, OP, || "block size 0".into())?;
        let max_blocks = spans
            .iter()
            .map(|s| s.block_table.len())
            .max()
            .unwrap_or(0)
            .max(1);
        let (mut pos, mut seq, mut tables) = (Vec::new(), Vec::new(), Vec::new());
        for (i, s) in spans.iter().enumerate() {
            check(s.offset == pos.len(), OP, || {
                format!(
                    "span {i} starts at row {}, expected {}",
                    s.offset,
                    pos.len()
                )
            })?;
            let end = s.start_pos + s.len;
            check(s.block_table.len() * block_size >= end, OP, || {
                format!(
                    "span {i} reaches position {end}, its table covers {}",
                    s.block_table.len() * block_size
                )
            })?;
            for t in 0..s.len {
                pos.push(
                    i32::try_from(s.start_pos + t).map_err(|_| DeviceError::Shape {
                        op: OP,
                        detail: "position overflows i32".into(),
                    })?,
                );
                seq.push(i as i32);
            }
            let mut row: Vec<i32> = s.block_table.iter().map(|&b| b as i32).collect();
            row.resize(max_blocks, 0);
            tables.extend(row);
        }
        let [mut p, mut q, mut t] = match self.parts.take() {
            Some([p, q, t]) => [Some(p), Some(q), Some(t)],
            None => [None, None, None],
        };
        dev.refill_index(&mut p, &pos)?;
        dev.refill_index(&mut q, &seq)?;
        dev.refill_index(&mut t, &tables)?;
        self.parts = p.zip(q).zip(t).map(|((p, q), t)| [p, q, t]);
        self.rows = pos.len();
        self.max_blocks = max_blocks;
        self.block_size = block_size;
        Ok(())
    }

    /// Query rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The longest context a row attends to (its position + 1).
    pub fn max_context(&self) -> usize {
        self.parts
            .as_ref()
            .map_or(0, |[pos, _, _]| (pos.max() + 1).max(0) as usize)
    }
}

/// Context positions per slice when attention is split over the context.
pub const SPLIT_CHUNK: usize = 256;

/// Causal attention of the batch's query rows (heads at column `q_off` of `q` rows
/// `q_stride` wide) over `cache`, into `out` (`[rows][n_head * head_dim]`), each row
/// seeing the positions and scored as `rule` says. A batch of few rows over long
/// contexts (decode) is split over the context ([`SPLIT_CHUNK`] positions a slice) so
/// that enough blocks run at once.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention(
    dev: &dyn Device,
    q: &DevBuf<f32>,
    q_stride: usize,
    q_off: usize,
    cache: &DevKvLayer,
    batch: &mut AttnBatch,
    shape: HeadShape,
    rule: ScoreRule,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    let ctx = seen(batch.max_context(), rule);
    let splits = if batch.rows * shape.n_kv_head >= 128 || ctx <= 2 * SPLIT_CHUNK {
        1
    } else {
        ctx.div_ceil(SPLIT_CHUNK).min(64)
    };
    paged_attention_split(
        dev, q, q_stride, q_off, cache, batch, shape, rule, out, splits,
    )
}

/// The most positions a row with `ctx` positions of context sees under `rule`.
fn seen(ctx: usize, rule: ScoreRule) -> usize {
    rule.window.map_or(ctx, |w| ctx.min(w))
}

/// The rule's kernel arguments: scale, soft-cap (0: none), window (0: none).
fn rule_args(rule: ScoreRule) -> Result<[KernelArg; 3]> {
    const OP: &str = "paged_attention";
    check(rule.scale.is_finite(), OP, || {
        format!("attention scale {} is not finite", rule.scale)
    })?;
    let cap = rule.softcap.unwrap_or(0.0);
    check(rule.softcap.is_none() || cap > 0.0, OP, || {
        format!("soft-cap {cap} must be > 0")
    })?;
    let window = rule.window.unwrap_or(0);
    check(rule.window.is_none() || window > 0, OP, || {
        "a window of 0 positions".into()
    })?;
    Ok([
        KernelArg::F32(rule.scale),
        KernelArg::F32(cap),
        int(window, OP, "window")?,
    ])
}

/// [`paged_attention`] with the context cut into `splits` slices (1: one pass).
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_split(
    dev: &dyn Device,
    q: &DevBuf<f32>,
    q_stride: usize,
    q_off: usize,
    cache: &DevKvLayer,
    batch: &mut AttnBatch,
    shape: HeadShape,
    rule: ScoreRule,
    out: &mut DevBuf<f32>,
    splits: usize,
) -> Result<()> {
    const OP: &str = "paged_attention";
    check_attention(q, q_stride, q_off, cache, batch, shape, out)?;
    let rule_args = rule_args(rule)?;
    check((1..=1024).contains(&splits), OP, || {
        format!("{splits} splits: must be in 1..=1024")
    })?;
    let rows = batch.rows;
    let Some([row_pos, row_seq, tables]) = &batch.parts else {
        return Ok(()); // never uploaded: no rows (check_attention refuses rows without parts)
    };
    if rows == 0 {
        return Ok(());
    }
    let HeadShape {
        n_head,
        n_kv_head,
        head_dim,
    } = shape;
    let common = [
        ptr(q),
        int(q_stride, OP, "q_stride")?,
        int(q_off, OP, "q_off")?,
        ptr(&cache.k),
        ptr(&cache.v),
        ptr(row_pos.buf()),
        ptr(row_seq.buf()),
        ptr(tables.buf()),
        int(batch.max_blocks, OP, "max_blocks")?,
        int(batch.block_size, OP, "block_size")?,
    ];
    let heads: Vec<KernelArg> = [
        int(n_head, OP, "n_head")?,
        int(n_kv_head, OP, "n_kv_head")?,
        int(head_dim, OP, "head_dim")?,
    ]
    .into_iter()
    .chain(rule_args)
    .collect();
    let grid = |z: usize| LaunchDims {
        grid: [rows as u32, n_kv_head as u32, z as u32],
        block: [(32 * (n_head / n_kv_head)) as u32, 1, 1],
    };
    if splits == 1 {
        let args: Vec<KernelArg> = common.into_iter().chain([ptr(out)]).chain(heads).collect();
        // SAFETY: check_attention bounded the tables by the cache and sized q and out;
        // each table covers its row's positions (AttnBatch::refill).
        return unsafe { dev.launch("paged_attention", grid(1), &args) };
    }
    let chunk = seen(batch.max_context(), rule).div_ceil(splits).max(1);
    let slots = rows * n_head * splits;
    let part_acc = dev.grown(&mut batch.part_acc, slots * head_dim)?.ptr();
    let part_ml = dev.grown(&mut batch.part_ml, slots * 2)?.ptr();
    let args: Vec<KernelArg> = common
        .into_iter()
        .chain([KernelArg::Ptr(part_acc), KernelArg::Ptr(part_ml)])
        .chain(heads)
        .chain([int(chunk, OP, "chunk")?])
        .collect();
    // SAFETY: as above; the partial buffers hold rows x n_head x splits slots.
    unsafe { dev.launch("paged_attention_partial", grid(splits), &args)? };
    let args = [
        KernelArg::Ptr(part_acc),
        KernelArg::Ptr(part_ml),
        ptr(out),
        int(n_head, OP, "n_head")?,
        int(head_dim, OP, "head_dim")?,
        int(splits, OP, "splits")?,
    ];
    let dims = LaunchDims {
        grid: [rows as u32, n_head as u32, 1],
        block: [32, 1, 1],
    };
    // SAFETY: reads the slots written above, writes rows x n_head x head_dim of `out`.
    unsafe { dev.launch("paged_attention_combine", dims, &args) }
}

/// The host-side checks of an attention launch: head shape, cache layout, query and
/// output sizes, block ids within the cache.
fn check_attention(
    q: &DevBuf<f32>,
    q_stride: usize,
    q_off: usize,
    cache: &DevKvLayer,
    batch: &AttnBatch,
    shape: HeadShape,
    out: &DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "paged_attention";
    let HeadShape {
        n_head,
        n_kv_head,
        head_dim,
    } = shape;
    check(
        n_kv_head > 0 && n_head.is_multiple_of(n_kv_head) && n_head / n_kv_head <= 8,
        OP,
        || {
            format!(
                "{n_head} query heads over {n_kv_head} K/V heads: need a whole group of at most 8"
            )
        },
    )?;
    check(head_dim > 0 && head_dim <= 256, OP, || {
        format!("head_dim {head_dim}: must be in 1..=256")
    })?;
    check(
        cache.kv_width == n_kv_head * head_dim && cache.block_size == batch.block_size,
        OP,
        || {
            format!(
                "cache holds {} wide rows in blocks of {}, shape wants {} in blocks of {}",
                cache.kv_width,
                cache.block_size,
                n_kv_head * head_dim,
                batch.block_size
            )
        },
    )?;
    let rows = batch.rows;
    check(
        q_off + n_head * head_dim <= q_stride && q.len() >= rows * q_stride,
        OP,
        || {
            format!(
                "{rows} query rows of {q_stride} from column {q_off}: q has {}",
                q.len()
            )
        },
    )?;
    check(out.len() >= rows * n_head * head_dim, OP, || {
        format!(
            "out needs {} floats, has {}",
            rows * n_head * head_dim,
            out.len()
        )
    })?;
    let Some([_, _, tables]) = &batch.parts else {
        return check(rows == 0, OP, || "the batch was never uploaded".into());
    };
    check(
        tables.min() >= 0 && (tables.max() as i64) < cache.num_blocks() as i64,
        OP,
        || {
            format!(
                "block ids must be in 0..{}, got {}..={}",
                cache.num_blocks(),
                tables.min(),
                tables.max()
            )
        },
    )
}
