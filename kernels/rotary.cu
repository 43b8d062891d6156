// Rotary position embedding, llama/GGUF style: adjacent pairs (x[2i], x[2i+1]) of each
// head are rotated by the angle pos * theta^(-2i/head_dim), read from a precomputed
// table (`cos`/`sin`, [max_pos][head_dim/2], the same table the CPU path uses).
//
// rotary: heads `n_heads` of width `head_dim` start at column `offset` of rows `stride`
// floats apart (Q and K side by side in the fused QKV output: one launch rotates both).
// One thread per (row, head, pair).

extern "C" __global__ void rotary(float* __restrict__ x, const float* __restrict__ cos_t,
                                  const float* __restrict__ sin_t, const int* __restrict__ pos,
                                  int rows, int stride, int offset, int n_heads, int head_dim) {
    const int half = head_dim / 2;
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * n_heads * half) return;
    const int i = (int)(g % half);
    const int h = (int)((g / half) % n_heads);
    const int r = (int)(g / ((u64)half * n_heads));
    float* p = x + (u64)r * stride + offset + h * head_dim + 2 * i;
    const float c = cos_t[(u64)pos[r] * half + i], s = sin_t[(u64)pos[r] * half + i];
    const float a = p[0], b = p[1];
    p[0] = a * c - b * s;
    p[1] = a * s + b * c;
}
