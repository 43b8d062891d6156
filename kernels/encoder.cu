// The BERT / XLM-RoBERTa encoder on the device, over a packed batch (every input's tokens
// end to end, no padding; `cu[s]..cu[s+1]` are input s's rows, `row_seq[r]` the input of
// row r). Activations are f32 row-major; weights are f16 (raw u16 bits).
//
// gemm_f16w: y[r][c] = act(sum_k x[r][k] * w[c][k] + bias[c]) for x [m, k] (f32, rows
//   `ldx` apart), w [n, k] (f16, PyTorch's [out, in]), y rows `ldy` apart. Tensor cores:
//   `mma.sync.aligned.m16n8k16` (f16 inputs, f32 accumulation; x is rounded to f16 as it
//   is staged). 128 x 128 output tiles per block of 256 threads (8 warps of 64 x 32),
//   32 of k per step; edges are zero-filled, so any m, n, k works. `act`: 0 none, 1 GELU
//   (erf), 2 GELU (tanh approximation), 3 ReLU, 4 tanh.
// embed_layer_norm: out[r] = LayerNorm(word[ids[r]] + position[pos[r]] + token_type[types[r]]).
// layer_norm_residual: x[r] = LayerNorm(x[r] + res[r]) in place (`res` may be null).
// encoder_attention: bidirectional softmax(q k^T * scale) v of each head within each
//   input, from qkv rows [q | k | v] (each `heads * head_dim`), into out [rows, hidden].
//   Keys go in chunks with an online softmax, so inputs of any length run.
// pool_rows: per input, its first row (mode 0) or the mean of its rows (mode 1),
//   L2-normalised (norm clamped at 1e-12) when `normalize` is non-zero.

#define GEMM_TILE 128
#define GEMM_K 32
#define GEMM_PAD 8
#define ATTN_CHUNK 512
#define ATTN_MAX_HEAD 256

__device__ __forceinline__ u32 pair_of(const u16* p) { return (u32)p[0] | ((u32)p[1] << 16); }

// d += a * b for one warp's m16n8k16 fragments, laid out as PTX documents: with
// g = lane / 4 and t = lane % 4, a = {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]},
// b = {B[2t..][g], B[2t+8..][g]} (pairs of f16, lower index in the low half), and
// d = {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}.
__device__ __forceinline__ void mma_16816(float* d, const u32* a, const u32* b) {
#if defined(FERRITE_EMULATION)
    ferrite_emu_mma_m16n8k16(d, a, b);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif __CUDA_ARCH__ >= 750
    // Turing: two m16n8k8 (k 0..7 from a[0], a[1], b[0]; k 8..15 from a[2], a[3], b[1]).
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(b[0]));
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
        "{%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[2]), "r"(a[3]), "r"(b[1]));
#else
#error "kernels/encoder.cu needs compute capability 7.5 or newer (tensor-core mma)"
#endif
}

__device__ __forceinline__ float activate(float v, int act) {
    switch (act) {
        case 1: return 0.5f * v * (1.0f + erff(v * 0.70710678f));
        case 2: return 0.5f * v * (1.0f + tanhf(0.7978846f * (v + 0.044715f * v * v * v)));
        case 3: return fmaxf(v, 0.0f);
        case 4: return tanhf(v);
        default: return v;
    }
}

extern "C" __global__ void gemm_f16w(const float* __restrict__ x, int ldx,
                                     const u16* __restrict__ w, const float* __restrict__ bias,
                                     float* __restrict__ y, int ldy, int m, int n, int k,
                                     int act) {
    __shared__ u16 sa[GEMM_TILE][GEMM_K + GEMM_PAD];
    __shared__ u16 sb[GEMM_TILE][GEMM_K + GEMM_PAD];
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
    const int g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    const int m0 = blockIdx.y * GEMM_TILE, n0 = blockIdx.x * GEMM_TILE;
    float acc[4][4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    for (int k0 = 0; k0 < k; k0 += GEMM_K) {
        for (int i = tid; i < GEMM_TILE * GEMM_K; i += blockDim.x) {
            const int r = i / GEMM_K, c = i % GEMM_K, kc = k0 + c;
            const bool kin = kc < k;
            sa[r][c] = (kin && m0 + r < m) ? f32_to_f16(x[(u64)(m0 + r) * ldx + kc]) : (u16)0;
            sb[r][c] = (kin && n0 + r < n) ? w[(u64)(n0 + r) * k + kc] : (u16)0;
        }
        __syncthreads();
        for (int kk = 0; kk < GEMM_K; kk += 16) {
            u32 a[4][4], b[4][2];
            for (int i = 0; i < 4; i++) {
                const int r = wm + i * 16 + g;
                a[i][0] = pair_of(&sa[r][kk + 2 * t]);
                a[i][1] = pair_of(&sa[r + 8][kk + 2 * t]);
                a[i][2] = pair_of(&sa[r][kk + 2 * t + 8]);
                a[i][3] = pair_of(&sa[r + 8][kk + 2 * t + 8]);
            }
            for (int j = 0; j < 4; j++) {
                const int c = wn + j * 8 + g;
                b[j][0] = pair_of(&sb[c][kk + 2 * t]);
                b[j][1] = pair_of(&sb[c][kk + 2 * t + 8]);
            }
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) mma_16816(acc[i][j], a[i], b[j]);
        }
        __syncthreads();
    }
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            for (int e = 0; e < 4; e++) {
                const int r = m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0);
                const int c = n0 + wn + j * 8 + 2 * t + (e & 1);
                if (r < m && c < n) {
                    float v = acc[i][j][e] + (bias ? bias[c] : 0.0f);
                    y[(u64)r * ldy + c] = activate(v, act);
                }
            }
}

// Largest value over the block (as block_sum); every thread gets it.
__device__ float block_max(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    v = warp_max(v);
    if (lane == 0) part[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float s = (lane < (int)(blockDim.x / 32)) ? part[lane] : NEG_BIG;
        s = warp_max(s);
        if (lane == 0) part[0] = s;
    }
    __syncthreads();
    const float r = part[0];
    __syncthreads();
    return r;
}

// LayerNorm of the `width` values at `row` in place (two passes: mean, then variance).
__device__ void layer_norm_row(float* row, const float* w, const float* b, int width,
                               float eps) {
    float s = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) s += row[i];
    const float mean = block_sum(s) / (float)width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float d = row[i] - mean;
        ss += d * d;
    }
    const float inv = rsqrtf(block_sum(ss) / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x)
        row[i] = (row[i] - mean) * inv * w[i] + b[i];
}

extern "C" __global__ void embed_layer_norm(const int* __restrict__ ids,
                                            const int* __restrict__ types,
                                            const int* __restrict__ pos,
                                            const u16* __restrict__ word,
                                            const u16* __restrict__ position,
                                            const u16* __restrict__ token_type,
                                            const float* __restrict__ w,
                                            const float* __restrict__ b,
                                            float* __restrict__ out, int width, float eps) {
    const u64 r = blockIdx.x;
    const u16* we = word + (u64)ids[r] * width;
    const u16* pe = position + (u64)pos[r] * width;
    const u16* te = token_type + (u64)types[r] * width;
    float* o = out + r * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x)
        o[i] = f16_to_f32(we[i]) + f16_to_f32(pe[i]) + f16_to_f32(te[i]);
    __syncthreads();
    layer_norm_row(o, w, b, width, eps);
}

extern "C" __global__ void layer_norm_residual(float* __restrict__ x,
                                               const float* __restrict__ res,
                                               const float* __restrict__ w,
                                               const float* __restrict__ b, int width,
                                               float eps) {
    float* o = x + (u64)blockIdx.x * width;
    if (res) {
        const float* q = res + (u64)blockIdx.x * width;
        for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] += q[i];
    }
    __syncthreads();
    layer_norm_row(o, w, b, width, eps);
}

extern "C" __global__ void encoder_attention(const float* __restrict__ qkv,
                                             const int* __restrict__ row_seq,
                                             const int* __restrict__ cu,
                                             float* __restrict__ out, int heads, int head_dim,
                                             float scale) {
    __shared__ float q[ATTN_MAX_HEAD];
    __shared__ float p[ATTN_CHUNK];
    const int row = blockIdx.x, h = blockIdx.y, tid = threadIdx.x;
    const int hidden = heads * head_dim, stride = 3 * hidden;
    const int s = row_seq[row], start = cu[s], end = cu[s + 1];
    for (int d = tid; d < head_dim; d += blockDim.x)
        q[d] = qkv[(u64)row * stride + h * head_dim + d] * scale;
    __syncthreads();
    // Each thread owns output dims tid and tid + blockDim.x (head_dim <= 2 * blockDim.x).
    float acc0 = 0.0f, acc1 = 0.0f, m = NEG_BIG, l = 0.0f;
    const int d0 = tid, d1 = tid + blockDim.x;
    for (int c0 = start; c0 < end; c0 += ATTN_CHUNK) {
        const int cn = min(ATTN_CHUNK, end - c0);
        float lmax = NEG_BIG;
        for (int j = tid; j < cn; j += blockDim.x) {
            const float* kr = qkv + (u64)(c0 + j) * stride + hidden + h * head_dim;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += q[d] * kr[d];
            p[j] = dot;
            lmax = fmaxf(lmax, dot);
        }
        const float new_m = fmaxf(m, block_max(lmax));
        float lsum = 0.0f;
        for (int j = tid; j < cn; j += blockDim.x) {
            p[j] = expf(p[j] - new_m);
            lsum += p[j];
        }
        const float csum = block_sum(lsum);  // its barriers also publish p
        const float corr = expf(m - new_m);
        l = l * corr + csum;
        acc0 *= corr;
        acc1 *= corr;
        const float* vb = qkv + (u64)c0 * stride + 2 * hidden + h * head_dim;
        for (int j = 0; j < cn; j++) {
            const float* vr = vb + (u64)j * stride;
            if (d0 < head_dim) acc0 += p[j] * vr[d0];
            if (d1 < head_dim) acc1 += p[j] * vr[d1];
        }
        m = new_m;
        __syncthreads();
    }
    float* o = out + (u64)row * hidden + h * head_dim;
    const float inv = 1.0f / l;
    if (d0 < head_dim) o[d0] = acc0 * inv;
    if (d1 < head_dim) o[d1] = acc1 * inv;
}

extern "C" __global__ void pool_rows(const float* __restrict__ x, const int* __restrict__ cu,
                                     float* __restrict__ out, int width, int mode,
                                     int normalize) {
    const int s = blockIdx.x, start = cu[s], end = cu[s + 1];
    float* o = out + (u64)s * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v;
        if (mode == 1) {
            v = 0.0f;
            for (int r = start; r < end; r++) v += x[(u64)r * width + i];
            v /= (float)(end - start);
        } else {
            v = x[(u64)start * width + i];
        }
        o[i] = v;
        ss += v * v;
    }
    if (normalize) {
        const float inv = 1.0f / fmaxf(sqrtf(block_sum(ss)), 1e-12f);
        for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] *= inv;
    }
}
