// Causal attention over the paged f16 KV cache, for decode and chunked prefill alike.
//
// The batch is flat: query row r belongs to sequence row_seq[r] and sits at position
// row_pos[r]; it attends to positions 0..=row_pos[r] of its own sequence, read through
// that sequence's block table (tables[seq * max_blocks + b], block_size tokens a block).
// Its own K/V must already be in the cache (kv_write runs first), so chunked prefill and
// decode need no separate paths and results do not depend on the batch around a row.
//
// Grid (rows, n_kv_head); block = 32 * group threads (group = n_head / n_kv_head query
// heads share one K/V head, at most 8): warp j computes query head kvh * group + j.
// Each warp walks the context 32 positions at a time: lane i scores position p0 + i
// (a full dot product over the head), the warp takes the running max and rescales
// (online softmax), then every lane accumulates V for its own head_dim / 32 columns.
// head_dim is at most 256 (lane i owns columns i, i + 32, ...). Queries are read at column q_off of rows
// q_stride floats apart (Q inside the fused QKV output); out is [rows][n_head * head_dim].

#define ATT_MAX_GROUP 8
#define ATT_MAX_HEAD_DIM 256

extern "C" __global__ void paged_attention(
    const float* __restrict__ q, int q_stride, int q_off, const u16* __restrict__ k_cache,
    const u16* __restrict__ v_cache, const int* __restrict__ row_pos,
    const int* __restrict__ row_seq, const int* __restrict__ tables, int max_blocks,
    int block_size, float* __restrict__ out, int n_head, int n_kv_head, int head_dim,
    float scale) {
    __shared__ float qs[ATT_MAX_GROUP][ATT_MAX_HEAD_DIM];
    const int r = blockIdx.x, kvh = blockIdx.y;
    const int group = n_head / n_kv_head;
    const int j = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int head = kvh * group + j;
    const int kv_width = n_kv_head * head_dim;
    const float* qr = q + (u64)r * q_stride + q_off + (u64)head * head_dim;
    for (int d = lane; d < head_dim; d += 32) qs[j][d] = qr[d] * scale;
    __syncthreads();

    const int ctx = row_pos[r] + 1;
    const int* table = tables + (u64)row_seq[r] * max_blocks;
    const int per_lane = (head_dim + 31) / 32;
    float acc[ATT_MAX_HEAD_DIM / 32];
    for (int i = 0; i < per_lane; i++) acc[i] = 0.0f;
    float m = NEG_BIG, l = 0.0f;

    for (int p0 = 0; p0 < ctx; p0 += 32) {
        const int p = p0 + lane;
        float s = NEG_BIG;
        u64 base = 0;
        if (p < ctx) {
            const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
            base = slot * kv_width + (u64)kvh * head_dim;
            const u16* kr = k_cache + base;
            float dot = 0.0f;
            for (int d = 0; d < head_dim; d++) dot += qs[j][d] * f16_to_f32(kr[d]);
            s = dot;
        }
        const float m_new = fmaxf(m, warp_max(s));
        const float wgt = (p < ctx) ? expf(s - m_new) : 0.0f;
        const float corr = expf(m - m_new);
        l = l * corr + warp_sum(wgt);
        for (int i = 0; i < per_lane; i++) acc[i] *= corr;
        const int n_valid = min(32, ctx - p0);
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
    float* o = out + (u64)r * n_head * head_dim + (u64)head * head_dim;
    const float inv = 1.0f / l;
    for (int i = 0; i < per_lane; i++) {
        const int d = lane + 32 * i;
        if (d < head_dim) o[d] = acc[i] * inv;
    }
}
