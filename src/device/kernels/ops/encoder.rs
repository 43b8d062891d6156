//! Wrappers of `kernels/encoder.cu`, the BERT / XLM-RoBERTa encoder on the device: a
//! tensor-core GEMM with f16 weights and a fused bias + activation, the embedding sum
//! with its LayerNorm, LayerNorm over a residual add, attention within each input of a
//! packed batch, and row pooling. Semantics are the CPU encoder's
//! (`model::encoder::{ops, attention, bert}`), the reference the tests compare against.
//!
//! Invariants: a [`DevSeqs`] was built from non-empty lengths, so its offsets are
//! increasing and every row's input exists; every wrapper checks buffer sizes, widths
//! and index ranges before launching.

use half::f16;

use super::{Result, check, int, ptr};
use crate::device::kernels::buffer::{DevBuf, DevIndex, Device, DeviceExt, KernelArg, LaunchDims};

/// Rows and columns of one GEMM block's output tile.
pub const GEMM_TILE: usize = 128;
/// Widest attention head the kernel takes.
pub const MAX_HEAD_DIM: usize = 256;

/// f16 bits of `v` (round to nearest even).
pub fn to_f16_bits(v: &[f32]) -> Vec<u16> {
    v.iter().map(|&x| f16::from_f32(x).to_bits()).collect()
}

/// A dense layer on the device: the weight `[out, in]` (PyTorch's layout) in f16, the
/// bias in f32.
#[derive(Debug)]
pub struct DevLinear {
    w: DevBuf<u16>,
    bias: DevBuf<f32>,
    n: usize,
    k: usize,
}

impl DevLinear {
    /// Uploads `w` (`n` rows of `k`, f32, rounded to f16) and `bias` (`n`).
    pub fn upload(dev: &dyn Device, w: &[f32], bias: &[f32], n: usize, k: usize) -> Result<Self> {
        check(
            w.len() == n * k && bias.len() == n && n * k > 0,
            "linear",
            || {
                format!(
                    "a [{n}, {k}] layer needs {} weights and {n} biases, got {} and {}",
                    n * k,
                    w.len(),
                    bias.len()
                )
            },
        )?;
        Ok(Self {
            w: dev.upload(&to_f16_bits(w))?,
            bias: dev.upload(bias)?,
            n,
            k,
        })
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Device bytes of the weight and bias.
    pub fn bytes(&self) -> usize {
        self.n * self.k * 2 + self.n * 4
    }
}

/// What the GEMM applies after the bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Epilogue {
    /// Nothing.
    None,
    /// GELU, erf form.
    GeluErf,
    /// GELU, tanh approximation.
    GeluTanh,
    /// ReLU.
    Relu,
    /// tanh (the classifier heads' pooler).
    Tanh,
}

impl Epilogue {
    fn code(self) -> i32 {
        match self {
            Epilogue::None => 0,
            Epilogue::GeluErf => 1,
            Epilogue::GeluTanh => 2,
            Epilogue::Relu => 3,
            Epilogue::Tanh => 4,
        }
    }
}

/// `y[r][c] = act(x[r] . w[c] + bias[c])` for `m` rows of `x` (rows `ldx` floats apart,
/// the first `lin.k()` read) into `y` (rows `ldy` apart, the first `lin.n()` written).
#[allow(clippy::too_many_arguments)]
pub fn gemm_f16w(
    dev: &dyn Device,
    x: &DevBuf<f32>,
    ldx: usize,
    m: usize,
    lin: &DevLinear,
    act: Epilogue,
    y: &mut DevBuf<f32>,
    ldy: usize,
) -> Result<()> {
    const OP: &str = "gemm_f16w";
    let (n, k) = (lin.n, lin.k);
    check(ldx >= k && ldy >= n, OP, || {
        format!("rows of x ({ldx}) and y ({ldy}) must hold k = {k} and n = {n}")
    })?;
    let need = |rows: usize, ld: usize, w: usize| if rows == 0 { 0 } else { (rows - 1) * ld + w };
    check(
        x.len() >= need(m, ldx, k) && y.len() >= need(m, ldy, n),
        OP,
        || {
            format!(
                "{m} rows: x needs {} floats, has {}; y needs {}, has {}",
                need(m, ldx, k),
                x.len(),
                need(m, ldy, n),
                y.len()
            )
        },
    )?;
    if m == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        int(ldx, OP, "ldx")?,
        ptr(&lin.w),
        ptr(&lin.bias),
        ptr(y),
        int(ldy, OP, "ldy")?,
        int(m, OP, "m")?,
        int(n, OP, "n")?,
        int(k, OP, "k")?,
        KernelArg::I32(act.code()),
    ];
    let dims = LaunchDims {
        grid: [
            n.div_ceil(GEMM_TILE) as u32,
            m.div_ceil(GEMM_TILE) as u32,
            1,
        ],
        block: [256, 1, 1],
    };
    // SAFETY: x and y cover m rows at their strides; w holds n x k, bias n.
    unsafe { dev.launch(OP, dims, &args) }
}

/// LayerNorm weights on the device.
#[derive(Debug)]
pub struct DevLayerNorm {
    w: DevBuf<f32>,
    b: DevBuf<f32>,
    eps: f32,
}

impl DevLayerNorm {
    /// Uploads weight and bias (the same width).
    pub fn upload(dev: &dyn Device, w: &[f32], b: &[f32], eps: f32) -> Result<Self> {
        check(w.len() == b.len() && !w.is_empty(), "layer norm", || {
            format!("weight of {} and bias of {}", w.len(), b.len())
        })?;
        Ok(Self {
            w: dev.upload(w)?,
            b: dev.upload(b)?,
            eps,
        })
    }

    /// Width.
    pub fn width(&self) -> usize {
        self.w.len()
    }
}

/// `x[r] = LayerNorm(x[r] + res[r])` for `rows` rows (plain LayerNorm without `res`).
pub fn layer_norm_residual(
    dev: &dyn Device,
    x: &mut DevBuf<f32>,
    res: Option<&DevBuf<f32>>,
    ln: &DevLayerNorm,
    rows: usize,
) -> Result<()> {
    const OP: &str = "layer_norm_residual";
    let need = rows * ln.width();
    check(
        x.len() >= need && res.is_none_or(|r| r.len() >= need),
        OP,
        || {
            format!(
                "{rows} rows of {}: x has {}, residual {:?}",
                ln.width(),
                x.len(),
                res.map(DevBuf::len)
            )
        },
    )?;
    if rows == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        KernelArg::Ptr(res.map_or(0, DevBuf::ptr)),
        ptr(&ln.w),
        ptr(&ln.b),
        int(ln.width(), OP, "width")?,
        KernelArg::F32(ln.eps),
    ];
    // SAFETY: x (and res) hold rows x width floats.
    unsafe { dev.launch(OP, LaunchDims::linear(rows as u32, 256), &args) }
}

/// The embedding tables (f16) and their LayerNorm.
#[derive(Debug)]
pub struct DevEmbeddings {
    word: DevBuf<u16>,
    position: DevBuf<u16>,
    token_type: DevBuf<u16>,
    norm: DevLayerNorm,
}

impl DevEmbeddings {
    /// Uploads the word, position and token-type tables (rows of `norm.width()`).
    pub fn upload(
        dev: &dyn Device,
        word: &[f32],
        position: &[f32],
        token_type: &[f32],
        norm: DevLayerNorm,
    ) -> Result<Self> {
        let w = norm.width();
        check(
            [word, position, token_type]
                .iter()
                .all(|t| !t.is_empty() && t.len() % w == 0),
            "embeddings",
            || format!("tables must be whole rows of {w}"),
        )?;
        Ok(Self {
            word: dev.upload(&to_f16_bits(word))?,
            position: dev.upload(&to_f16_bits(position))?,
            token_type: dev.upload(&to_f16_bits(token_type))?,
            norm,
        })
    }

    /// Device bytes of the tables.
    pub fn bytes(&self) -> usize {
        2 * (self.word.len() + self.position.len() + self.token_type.len())
    }
}

/// `out[r] = LayerNorm(word[ids[r]] + position[pos[r]] + token_type[types[r]])`.
pub fn embed_layer_norm(
    dev: &dyn Device,
    emb: &DevEmbeddings,
    ids: &DevIndex,
    types: &DevIndex,
    pos: &DevIndex,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "embed_layer_norm";
    let w = emb.norm.width();
    let rows = ids.len();
    check(types.len() == rows && pos.len() == rows, OP, || {
        format!("{rows} ids, {} types, {} positions", types.len(), pos.len())
    })?;
    check(out.len() >= rows * w, OP, || {
        format!("{rows} rows of {w}: out has {}", out.len())
    })?;
    for (what, idx, table) in [
        ("token id", ids, &emb.word),
        ("token type", types, &emb.token_type),
        ("position", pos, &emb.position),
    ] {
        let n = table.len() / w;
        check(idx.min() >= 0 && (idx.max() as i64) < n as i64, OP, || {
            format!(
                "{what}s must be in 0..{n}, got {}..={}",
                idx.min(),
                idx.max()
            )
        })?;
    }
    if rows == 0 {
        return Ok(());
    }
    let args = [
        ptr(ids.buf()),
        ptr(types.buf()),
        ptr(pos.buf()),
        ptr(&emb.word),
        ptr(&emb.position),
        ptr(&emb.token_type),
        ptr(&emb.norm.w),
        ptr(&emb.norm.b),
        ptr(out),
        int(w, OP, "width")?,
        KernelArg::F32(emb.norm.eps),
    ];
    // SAFETY: every index is inside its table (checked above); out holds rows x w.
    unsafe { dev.launch(OP, LaunchDims::linear(rows as u32, 256), &args) }
}

/// A packed batch's inputs on the device: each row's input and the inputs' row offsets.
#[derive(Debug, Default)]
pub struct DevSeqs {
    row_seq: Option<DevIndex>,
    cu: Option<DevIndex>,
    inputs: usize,
    tokens: usize,
}

impl DevSeqs {
    /// Uploads inputs of `lens` rows (each at least 1), reusing this value's buffers.
    pub fn refill(&mut self, dev: &dyn Device, lens: &[usize]) -> Result<()> {
        const OP: &str = "packed batch";
        check(lens.iter().all(|&l| l > 0), OP, || {
            "every input needs at least one token".into()
        })?;
        let tokens: usize = lens.iter().sum();
        check(i32::try_from(tokens).is_ok(), OP, || {
            format!("{tokens} tokens overflow i32")
        })?;
        let mut cu = Vec::with_capacity(lens.len() + 1);
        let mut row_seq = Vec::with_capacity(tokens);
        cu.push(0i32);
        for (s, &l) in lens.iter().enumerate() {
            row_seq.extend(std::iter::repeat_n(s as i32, l));
            cu.push(cu[s] + l as i32);
        }
        dev.refill_index(&mut self.row_seq, &row_seq)?;
        dev.refill_index(&mut self.cu, &cu)?;
        self.inputs = lens.len();
        self.tokens = tokens;
        Ok(())
    }

    /// Inputs.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Rows of all inputs.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    fn bufs(&self, op: &'static str) -> Result<(&DevIndex, &DevIndex)> {
        match (&self.row_seq, &self.cu) {
            (Some(r), Some(c)) => Ok((r, c)),
            _ => Err(crate::device::kernels::DeviceError::Shape {
                op,
                detail: "the packed batch was never uploaded".into(),
            }),
        }
    }
}

/// Attention of `heads` heads of `head_dim` within each input of `seqs`, from rows of
/// `qkv` (`[q | k | v]`, `3 * heads * head_dim` wide) into `out` (`heads * head_dim`).
pub fn encoder_attention(
    dev: &dyn Device,
    qkv: &DevBuf<f32>,
    seqs: &DevSeqs,
    heads: usize,
    head_dim: usize,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "encoder_attention";
    let (row_seq, cu) = seqs.bufs(OP)?;
    let (rows, hidden) = (seqs.tokens, heads * head_dim);
    check(head_dim > 0 && head_dim <= MAX_HEAD_DIM, OP, || {
        format!("heads of {head_dim} values (1..={MAX_HEAD_DIM})")
    })?;
    check(
        qkv.len() >= rows * 3 * hidden && out.len() >= rows * hidden,
        OP,
        || {
            format!(
                "{rows} rows of {hidden}: qkv has {}, out {}",
                qkv.len(),
                out.len()
            )
        },
    )?;
    if rows == 0 {
        return Ok(());
    }
    let args = [
        ptr(qkv),
        ptr(row_seq.buf()),
        ptr(cu.buf()),
        ptr(out),
        int(heads, OP, "heads")?,
        int(head_dim, OP, "head_dim")?,
        KernelArg::F32(1.0 / (head_dim as f32).sqrt()),
    ];
    let dims = LaunchDims {
        grid: [rows as u32, heads as u32, 1],
        block: [128, 1, 1],
    };
    // SAFETY: row_seq and cu come from DevSeqs::refill (every row's input and every
    // offset within the rows); qkv and out hold every row.
    unsafe { dev.launch(OP, dims, &args) }
}

/// How an input's rows become one row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPool {
    /// Its first row (CLS).
    First,
    /// The mean of its rows.
    Mean,
}

/// One row of `width` per input of `seqs` into `out`, pooled from `x`, L2-normalised
/// when `normalize`.
pub fn pool_rows(
    dev: &dyn Device,
    x: &DevBuf<f32>,
    seqs: &DevSeqs,
    width: usize,
    pool: RowPool,
    normalize: bool,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "pool_rows";
    let (_, cu) = seqs.bufs(OP)?;
    check(
        width > 0 && x.len() >= seqs.tokens * width && out.len() >= seqs.inputs * width,
        OP,
        || {
            format!(
                "{} rows and {} inputs of {width}: x has {}, out {}",
                seqs.tokens,
                seqs.inputs,
                x.len(),
                out.len()
            )
        },
    )?;
    if seqs.inputs == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        ptr(cu.buf()),
        ptr(out),
        int(width, OP, "width")?,
        KernelArg::I32(i32::from(pool == RowPool::Mean)),
        KernelArg::I32(i32::from(normalize)),
    ];
    // SAFETY: cu's offsets lie within x's rows (DevSeqs invariant).
    unsafe { dev.launch(OP, LaunchDims::linear(seqs.inputs as u32, 256), &args) }
}
