// Causal attention over the paged f16 KV cache, for decode and chunked prefill alike.
//
// The batch is flat: query row r belongs to sequence row_seq[r] and sits at position
// row_pos[r]; it attends to positions first..=row_pos[r] of its own sequence, read through
// that sequence's block table (tables[seq * max_blocks + b], block_size tokens a block).
// Its own K/V must already be in the cache (kv_write runs first), so chunked prefill and
// decode need no separate paths and results do not depend on the batch around a row.
//
// Scores follow the CPU's `ScoreRule`: s = (q . k) * scale (the query is pre-scaled),
// then s = softcap * tanh(s / softcap) when softcap > 0; with window > 0 a row at
// position p sees only positions > p - window (first = max(0, p + 1 - window)), else
// first = 0.
//
// Grid (rows, n_kv_head); block = 32 * group threads (group = n_head / n_kv_head query
// heads share one K/V head, at most 8): warp j computes query head kvh * group + j.
// Each warp walks the context 32 positions at a time: lane i scores position p0 + i
// (a full dot product over the head), the warp takes the running max and rescales
// (online softmax), then every lane accumulates V for its own head_dim / 32 columns.
// head_dim is at most 256 (lane i owns columns i, i + 32, ...). Queries are read at column q_off of rows
// q_stride floats apart (Q inside the fused QKV output); out is [rows][n_head * head_dim].
//
// Split-K (long contexts, few rows): paged_attention_partial runs the same walk over
// one slice of `chunk` positions (counted from the row's first position) per blockIdx.z
// and leaves, per (row, head, slice), the
// unnormalised sums and the slice's running max m and denominator l;
// paged_attention_combine rescales the slices to their common max and normalises.
// An empty slice leaves m = NEG_BIG, l = 0 and contributes nothing.

#define ATT_MAX_GROUP 8
#define ATT_MAX_HEAD_DIM 256

// Walks positions [p_begin, p_end) of query head `head` (row r) with the online
// softmax: `acc` (this lane's columns), `m` and `l` carry the running state.
__device__ __forceinline__ void attend_range(
    const float* qh, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
    const int* table, int block_size, int kv_width, int kvh, int head_dim, int p_begin,
    int p_end, float softcap, float* acc, float* m_io, float* l_io) {
    const int lane = threadIdx.x % 32;
    const int per_lane = (head_dim + 31) / 32;
    float m = *m_io, l = *l_io;
    for (int p0 = p_begin; p0 < p_end; p0 += 32) {
        const int p = p0 + lane;
        float s = NEG_BIG;
        u64 base = 0;
        if (p < p_end) {
            const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
            base = slot * kv_width + (u64)kvh * head_dim;
            const u16* kr = k_cache + base;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += qh[d] * f16_to_f32(kr[d]);
            s = softcap > 0.0f ? softcap * tanhf(dot * (1.0f / softcap)) : dot;
        }
        const float m_new = fmaxf(m, warp_max(s));
        const float wgt = (p < p_end) ? expf(s - m_new) : 0.0f;
        const float corr = expf(m - m_new);
        l = l * corr + warp_sum(wgt);
        for (int i = 0; i < per_lane; i++) acc[i] *= corr;
        const int n_valid = min(32, p_end - p0);
        for (int t = 0; t < n_valid; t++) {
            const float wt = __shfl_sync(0xffffffffu, wgt, t);
            const u64 bt = __shfl_sync(0xffffffffu, base, t);
            const u16* vr = v_cache + bt;
            for (int i = 0; i < per_lane; i++) {
                const int d = lane + 32 * i;
                if (d < head_dim) acc[i] += wt * f16_to_f32(vr[d]);
            }
        }
        m = m_new;
    }
    *m_io = m;
    *l_io = l;
}

// The first position a row with `ctx` positions of context sees (window 0: no window).
__device__ __forceinline__ int first_key(int ctx, int window) {
    return (window > 0 && ctx > window) ? ctx - window : 0;
}

// Loads this warp's query head, pre-scaled, into shared memory; returns it.
__device__ __forceinline__ const float* load_query(const float* __restrict__ q, int q_stride,
                                                   int q_off, int r, int head, int head_dim,
                                                   float scale) {
    __shared__ float qs[ATT_MAX_GROUP][ATT_MAX_HEAD_DIM];
    const int j = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float* qr = q + (u64)r * q_stride + q_off + (u64)head * head_dim;
    for (int d = lane; d < head_dim; d += 32) qs[j][d] = qr[d] * scale;
    __syncthreads();
    return qs[j];
}

extern "C" __global__ void paged_attention(
    const float* __restrict__ q, int q_stride, int q_off, const u16* __restrict__ k_cache,
    const u16* __restrict__ v_cache, const int* __restrict__ row_pos,
    const int* __restrict__ row_seq, const int* __restrict__ tables, int max_blocks,
    int block_size, float* __restrict__ out, int n_head, int n_kv_head, int head_dim,
    float scale, float softcap, int window) {
    const int r = blockIdx.x, kvh = blockIdx.y;
    const int group = n_head / n_kv_head;
    const int head = kvh * group + threadIdx.x / 32, lane = threadIdx.x % 32;
    const float* qh = load_query(q, q_stride, q_off, r, head, head_dim, scale);
    const int* table = tables + (u64)row_seq[r] * max_blocks;
    float acc[ATT_MAX_HEAD_DIM / 32];
    for (int i = 0; i < ATT_MAX_HEAD_DIM / 32; i++) acc[i] = 0.0f;
    float m = NEG_BIG, l = 0.0f;
    const int ctx = row_pos[r] + 1;
    attend_range(qh, k_cache, v_cache, table, block_size, n_kv_head * head_dim, kvh, head_dim,
                 first_key(ctx, window), ctx, softcap, acc, &m, &l);
    float* o = out + (u64)r * n_head * head_dim + (u64)head * head_dim;
    const float inv = 1.0f / l;
    for (int i = 0; i < (head_dim + 31) / 32; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) o[d] = acc[i] * inv;
    }
}

// part_acc: [rows][n_head][splits][head_dim]; part_ml: [rows][n_head][splits][2].
extern "C" __global__ void paged_attention_partial(
    const float* __restrict__ q, int q_stride, int q_off, const u16* __restrict__ k_cache,
    const u16* __restrict__ v_cache, const int* __restrict__ row_pos,
    const int* __restrict__ row_seq, const int* __restrict__ tables, int max_blocks,
    int block_size, float* __restrict__ part_acc, float* __restrict__ part_ml, int n_head,
    int n_kv_head, int head_dim, float scale, float softcap, int window, int chunk) {
    const int r = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
    const int group = n_head / n_kv_head;
    const int head = kvh * group + threadIdx.x / 32, lane = threadIdx.x % 32;
    const float* qh = load_query(q, q_stride, q_off, r, head, head_dim, scale);
    const int* table = tables + (u64)row_seq[r] * max_blocks;
    const int ctx = row_pos[r] + 1;
    const int begin = min(first_key(ctx, window) + split * chunk, ctx);
    const int end = min(begin + chunk, ctx);
    float acc[ATT_MAX_HEAD_DIM / 32];
    for (int i = 0; i < ATT_MAX_HEAD_DIM / 32; i++) acc[i] = 0.0f;
    float m = NEG_BIG, l = 0.0f;
    attend_range(qh, k_cache, v_cache, table, block_size, n_kv_head * head_dim, kvh, head_dim,
                 begin, end, softcap, acc, &m, &l);
    const u64 slot = ((u64)r * n_head + head) * splits + split;
    float* o = part_acc + slot * head_dim;
    for (int i = 0; i < (head_dim + 31) / 32; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) o[d] = acc[i];
    }
    if (lane == 0) {
        part_ml[slot * 2] = m;
        part_ml[slot * 2 + 1] = l;
    }
}

// One warp per (row, head): out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
extern "C" __global__ void paged_attention_combine(const float* __restrict__ part_acc,
                                                   const float* __restrict__ part_ml,
                                                   float* __restrict__ out, int n_head,
                                                   int head_dim, int splits) {
    const u64 rh = (u64)blockIdx.x * n_head + blockIdx.y;
    const float* ml = part_ml + rh * splits * 2;
    float big = NEG_BIG;
    for (int s = 0; s < splits; s++) big = fmaxf(big, ml[2 * s]);
    float denom = 0.0f;
    for (int s = 0; s < splits; s++) denom += ml[2 * s + 1] * expf(ml[2 * s] - big);
    const float inv = 1.0f / denom;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int s = 0; s < splits; s++)
            v += part_acc[(rh * splits + s) * head_dim + d] * expf(ml[2 * s] - big);
        out[rh * head_dim + d] = v * inv;
    }
}
