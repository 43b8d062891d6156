// Quantized weight kernels over GGML blocks kept exactly as the GGUF file stores them.
//
// Every format is read in "items" of 32 consecutive weights of one row:
//   Q4_0 (18-byte block of 32), Q4_1 (20 of 32), Q5_0 (22 of 32), Q5_1 (24 of 32),
//   Q8_0 (34 of 32): one item per block;
//   Q2_K (84-byte super-block of 256), Q3_K (110 of 256), Q4_K (144 of 256), Q5_K (176
//   of 256), Q6_K (210 of 256): eight items per super-block;
//   F16, BF16: 32 two-byte values per item.
// `deq_item<F>` decodes one item to 32 floats; every kernel here is built on it, so the
// format logic lives in one place. Weight rows are `row_bytes` apart, `k` weights long
// (a multiple of the format's block length).
//
// Kernels (F = q4_0, q4_1, q5_0, q5_1, q8_0, q2_k, q3_k, q4_k, q5_k, q6_k, f16, bf16);
// outputs go to rows `ldy` floats apart, so
// separate projections can write side by side into one fused row:
//   qmatvec_F   y[m][n] = x[m][k] . W[n][k] for m <= 8 activation rows: one warp per
//               weight row, lanes stride over the row's items, every item is decoded once
//               and used for all m rows (decode: few rows, bandwidth-bound).
//   qmatmul_F   the same product for any m, tiled: a 256-thread block decodes a 64x32
//               weight tile into shared memory once and multiplies it with a 32x32 tile
//               of activations (prefill: many rows, compute-bound).
//   dequant_rows_F  out[i][k] = W[ids[i]][k] in f32 (embedding lookup, tests).

#define FMT_Q4_0 0
#define FMT_Q4_1 1
#define FMT_Q8_0 2
#define FMT_Q4_K 3
#define FMT_Q6_K 4
#define FMT_Q5_0 5
#define FMT_Q5_1 6
#define FMT_Q2_K 7
#define FMT_Q3_K 8
#define FMT_Q5_K 9
#define FMT_F16 10
#define FMT_BF16 11

__device__ __forceinline__ float bf16_to_f32(u16 h) {
#ifdef FERRITE_EMULATION
    const u32 bits = (u32)h << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
#else
    return __uint_as_float((u32)h << 16);
#endif
}

// The 32 fifth bits of a Q5_0 / Q5_1 block (bit j: value j), read bytewise.
__device__ __forceinline__ u32 q5_high_bits(const u8* qh) {
    return (u32)qh[0] | ((u32)qh[1] << 8) | ((u32)qh[2] << 16) | ((u32)qh[3] << 24);
}

// Q3_K's signed 6-bit scale i (0..15): low nibbles in bytes 0..7, bit pairs in 8..11.
__device__ __forceinline__ int q3k_scale(const u8* s, int i) {
    const int low = i < 8 ? (s[i] & 0xF) : (s[i - 8] >> 4);
    const int high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    return (low | (high << 4)) - 32;
}

// Q4_K's packed 6-bit scale and min of sub-block j (0..7).
__device__ __forceinline__ void q4k_scale_min(int j, const u8* q, float* sc, float* mn) {
    if (j < 4) {
        *sc = (float)(q[j] & 63);
        *mn = (float)(q[j + 4] & 63);
    } else {
        *sc = (float)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *mn = (float)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

template <int F>
__device__ __forceinline__ void deq_item(const u8* row, int item, float* v) {
    if (F == FMT_Q4_0) {
        const u8* b = row + item * 18;
        const float d = load_f16(b);
        const u8* qs = b + 2;
        for (int j = 0; j < 16; j++) {
            v[j] = d * (float)((int)(qs[j] & 0xF) - 8);
            v[j + 16] = d * (float)((int)(qs[j] >> 4) - 8);
        }
    } else if (F == FMT_Q4_1) {
        const u8* b = row + item * 20;
        const float d = load_f16(b), m = load_f16(b + 2);
        const u8* qs = b + 4;
        for (int j = 0; j < 16; j++) {
            v[j] = d * (float)(qs[j] & 0xF) + m;
            v[j + 16] = d * (float)(qs[j] >> 4) + m;
        }
    } else if (F == FMT_Q5_0 || F == FMT_Q5_1) {
        const int bytes = F == FMT_Q5_0 ? 22 : 24;
        const u8* b = row + item * bytes;
        const float d = load_f16(b);
        const float m = F == FMT_Q5_1 ? load_f16(b + 2) : 0.0f;
        const int bias = F == FMT_Q5_0 ? 16 : 0;
        const u32 qh = q5_high_bits(b + (F == FMT_Q5_0 ? 2 : 4));
        const u8* qs = b + (F == FMT_Q5_0 ? 6 : 8);
        for (int j = 0; j < 16; j++) {
            const int q0 = (int)((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - bias;
            const int q1 = (int)((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - bias;
            if (F == FMT_Q5_0) {
                v[j] = d * (float)q0;
                v[j + 16] = d * (float)q1;
            } else {
                v[j] = d * (float)q0 + m;
                v[j + 16] = d * (float)q1 + m;
            }
        }
    } else if (F == FMT_Q2_K) {
        const u8* b = row + (item / 8) * 84;
        const int s = item % 8, n = s / 4, shift = 2 * (s % 4);
        const u8* qs = b + 16 + 32 * n;
        const float d = load_f16(b + 80), dmin = load_f16(b + 82);
        for (int h = 0; h < 2; h++) {
            const int sc = b[2 * s + h];
            const float dl = d * (float)(sc & 0xF), ml = dmin * (float)(sc >> 4);
            for (int l = 16 * h; l < 16 * h + 16; l++) v[l] = dl * (float)((qs[l] >> shift) & 3) - ml;
        }
    } else if (F == FMT_Q3_K) {
        const u8* b = row + (item / 8) * 110;
        const int s = item % 8, n = s / 4, j = s % 4;
        const u8* qs = b + 32 + 32 * n;
        const float d = load_f16(b + 108);
        for (int h = 0; h < 2; h++) {
            const float dl = d * (float)q3k_scale(b + 96, 2 * s + h);
            for (int l = 16 * h; l < 16 * h + 16; l++) {
                const int low = (qs[l] >> (2 * j)) & 3;
                const int q = ((b[l] >> (4 * n + j)) & 1) ? low : low - 4;
                v[l] = dl * (float)q;
            }
        }
    } else if (F == FMT_Q5_K) {
        const u8* b = row + (item / 8) * 176;
        const int sub = item % 8;
        const float d = load_f16(b), dmin = load_f16(b + 2);
        float sc, mn;
        q4k_scale_min(sub, b + 4, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        const u8* qh = b + 16;
        const u8* q = b + 48 + (sub / 2) * 32;
        const int shift = (sub & 1) * 4;
        for (int l = 0; l < 32; l++) {
            const int qv = ((q[l] >> shift) & 0xF) | (((qh[l] >> sub) & 1) << 4);
            v[l] = d1 * (float)qv - m1;
        }
    } else if (F == FMT_F16) {
        const u8* b = row + item * 64;
        for (int j = 0; j < 32; j++) v[j] = load_f16(b + 2 * j);
    } else if (F == FMT_BF16) {
        const u8* b = row + item * 64;
        for (int j = 0; j < 32; j++) v[j] = bf16_to_f32((u16)(b[2 * j] | (b[2 * j + 1] << 8)));
    } else if (F == FMT_Q8_0) {
        const u8* b = row + item * 34;
        const float d = load_f16(b);
        const i8* qs = (const i8*)(b + 2);
        for (int j = 0; j < 32; j++) v[j] = d * (float)qs[j];
    } else if (F == FMT_Q4_K) {
        const u8* b = row + (item / 8) * 144;
        const int sub = item % 8;
        const float d = load_f16(b), dmin = load_f16(b + 2);
        float sc, mn;
        q4k_scale_min(sub, b + 4, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        const u8* q = b + 16 + (sub / 2) * 32;
        const int shift = (sub & 1) * 4;
        for (int l = 0; l < 32; l++) v[l] = d1 * (float)((q[l] >> shift) & 0xF) - m1;
    } else {  // FMT_Q6_K
        const u8* b = row + (item / 8) * 210;
        const int sub = item % 8, half = sub / 4, qq = sub % 4;
        const u8* ql = b + half * 64 + (qq & 1) * 32;
        const u8* qh = b + 128 + half * 32;
        const i8* sc = (const i8*)(b + 192) + half * 8 + 2 * qq;
        const float d = load_f16(b + 208);
        const int nib = (qq >> 1) * 4, hs = 2 * qq;
        for (int l = 0; l < 32; l++) {
            const int q = (int)(((ql[l] >> nib) & 0xF) | (((qh[l] >> hs) & 3) << 4)) - 32;
            v[l] = d * (float)sc[l / 16] * (float)q;
        }
    }
}

#define QMATVEC_MAX_ROWS 8

template <int F>
__device__ void qmatvec_impl(const u8* __restrict__ w, const float* __restrict__ x,
                             float* __restrict__ y, int n, int k, int m, int row_bytes, int ldy) {
    const int warp = (int)((blockIdx.x * blockDim.x + threadIdx.x) / 32);
    const int lane = threadIdx.x % 32;
    if (warp >= n) return;  // whole warps leave together
    const u8* row = w + (u64)warp * row_bytes;
    float acc[QMATVEC_MAX_ROWS];
    for (int r = 0; r < QMATVEC_MAX_ROWS; r++) acc[r] = 0.0f;
    const int items = k / 32;
    for (int it = lane; it < items; it += 32) {
        float v[32];
        deq_item<F>(row, it, v);
        for (int r = 0; r < QMATVEC_MAX_ROWS; r++) {
            if (r < m) {
                const float* xr = x + (u64)r * k + it * 32;
                float s = 0.0f;
                for (int j = 0; j < 32; j++) s += v[j] * xr[j];
                acc[r] += s;
            }
        }
    }
    for (int r = 0; r < QMATVEC_MAX_ROWS; r++) {
        if (r < m) {
            const float s = warp_sum(acc[r]);
            if (lane == 0) y[(u64)r * ldy + warp] = s;
        }
    }
}

// Tile: 64 weight rows x 32 activation rows, k in steps of one item (32). 256 threads:
// thread t owns weight row t % 64 of the tile and activation rows (t / 64) * 8 .. + 8.
#define TILE_N 64
#define TILE_M 32

template <int F>
__device__ void qmatmul_impl(const u8* __restrict__ w, const float* __restrict__ x,
                             float* __restrict__ y, int n, int k, int m, int row_bytes, int ldy) {
    __shared__ float ws[TILE_N][33];
    __shared__ float xs[TILE_M][33];
    const int t = threadIdx.x;
    const int n0 = blockIdx.x * TILE_N, m0 = blockIdx.y * TILE_M;
    const int tn = t % TILE_N, tm = (t / TILE_N) * 8;
    float acc[8];
    for (int i = 0; i < 8; i++) acc[i] = 0.0f;
    const int items = k / 32;
    for (int it = 0; it < items; it++) {
        if (t < TILE_N) {
            float v[32];
            if (n0 + t < n) {
                deq_item<F>(w + (u64)(n0 + t) * row_bytes, it, v);
            } else {
                for (int j = 0; j < 32; j++) v[j] = 0.0f;
            }
            for (int j = 0; j < 32; j++) ws[t][j] = v[j];
        }
        for (int e = t; e < TILE_M * 32; e += blockDim.x) {
            const int r = e / 32, c = e % 32;
            xs[r][c] = (m0 + r < m) ? x[(u64)(m0 + r) * k + it * 32 + c] : 0.0f;
        }
        __syncthreads();
        for (int i = 0; i < 8; i++) {
            float s = 0.0f;
            for (int j = 0; j < 32; j++) s += ws[tn][j] * xs[tm + i][j];
            acc[i] += s;
        }
        __syncthreads();
    }
    for (int i = 0; i < 8; i++) {
        const int r = m0 + tm + i, c = n0 + tn;
        if (r < m && c < n) y[(u64)r * ldy + c] = acc[i];
    }
}

// One thread per (output row, item).
template <int F>
__device__ void dequant_rows_impl(const u8* __restrict__ w, const int* __restrict__ ids,
                                  float* __restrict__ out, int k, int rows, int row_bytes) {
    const int items = k / 32;
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * items) return;
    const int i = (int)(g / items), it = (int)(g % items);
    float v[32];
    deq_item<F>(w + (u64)ids[i] * row_bytes, it, v);
    float* o = out + (u64)i * k + it * 32;
    for (int j = 0; j < 32; j++) o[j] = v[j];
}

#define QUANT_KERNELS(name, F)                                                          \
    extern "C" __global__ void qmatvec_##name(const u8* w, const float* x, float* y,    \
                                              int n, int k, int m, int row_bytes, int ldy) { \
        qmatvec_impl<F>(w, x, y, n, k, m, row_bytes, ldy);                              \
    }                                                                                   \
    extern "C" __global__ void qmatmul_##name(const u8* w, const float* x, float* y,    \
                                              int n, int k, int m, int row_bytes, int ldy) { \
        qmatmul_impl<F>(w, x, y, n, k, m, row_bytes, ldy);                              \
    }                                                                                   \
    extern "C" __global__ void dequant_rows_##name(const u8* w, const int* ids,         \
                                                   float* out, int k, int rows,         \
                                                   int row_bytes) {                     \
        dequant_rows_impl<F>(w, ids, out, k, rows, row_bytes);                          \
    }

QUANT_KERNELS(q4_0, FMT_Q4_0)
QUANT_KERNELS(q4_1, FMT_Q4_1)
QUANT_KERNELS(q8_0, FMT_Q8_0)
QUANT_KERNELS(q4_k, FMT_Q4_K)
QUANT_KERNELS(q6_k, FMT_Q6_K)
QUANT_KERNELS(q5_0, FMT_Q5_0)
QUANT_KERNELS(q5_1, FMT_Q5_1)
QUANT_KERNELS(q2_k, FMT_Q2_K)
QUANT_KERNELS(q3_k, FMT_Q3_K)
QUANT_KERNELS(q5_k, FMT_Q5_K)
QUANT_KERNELS(f16, FMT_F16)
QUANT_KERNELS(bf16, FMT_BF16)
