// Writes the batch's new K and V rows into the paged f16 cache through the slot mapping.
//
// Cache layout per layer: [slot][kv_width] f16 (kv_width = n_kv_head * head_dim), where
// slot = block * block_size + offset, as on the CPU path. K and V of row r are read at
// columns k_off / v_off of `qkv` rows `stride` floats apart (the fused QKV output).
// A negative slot skips the row. One thread per (row, column).

extern "C" __global__ void kv_write(const float* __restrict__ qkv, int stride, int k_off,
                                    int v_off, const int* __restrict__ slots,
                                    u16* __restrict__ k_cache, u16* __restrict__ v_cache,
                                    int kv_width, int rows) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * kv_width) return;
    const int r = (int)(g / kv_width), c = (int)(g % kv_width);
    const int slot = slots[r];
    if (slot < 0) return;
    const float* src = qkv + (u64)r * stride;
    k_cache[(u64)slot * kv_width + c] = f32_to_f16(src[k_off + c]);
    v_cache[(u64)slot * kv_width + c] = f32_to_f16(src[v_off + c]);
}
