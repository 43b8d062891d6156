// Rotary position embedding from a precomputed table (`cos`/`sin`, [max_pos][half], the
// same table the CPU path uses, half = n_rot / 2). Pair i of a head is (x[2i], x[2i+1])
// (`halves` = 0: llama.cpp's "normal", adjacent pairs) or (x[i], x[i + half])
// (`halves` = 1: "neox", split halves), rotated by the angle of (position, i). Only the
// first n_rot = 2 * half values of a head rotate (partial rotary); the rest pass through.
//
// rotary: heads `n_heads` of width `head_dim` start at column `offset` of rows `stride`
// floats apart (Q and K side by side in the fused QKV output: one launch rotates both).
// One thread per (row, head, pair).

extern "C" __global__ void rotary(float* __restrict__ x, const float* __restrict__ cos_t,
                                  const float* __restrict__ sin_t, const int* __restrict__ pos,
                                  int rows, int stride, int offset, int n_heads, int head_dim,
                                  int half, int halves) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * n_heads * half) return;
    const int i = (int)(g % half);
    const int h = (int)((g / half) % n_heads);
    const int r = (int)(g / ((u64)half * n_heads));
    float* head = x + (u64)r * stride + offset + (u64)h * head_dim;
    const int ia = halves ? i : 2 * i, ib = halves ? i + half : 2 * i + 1;
    const float c = cos_t[(u64)pos[r] * half + i], s = sin_t[(u64)pos[r] * half + i];
    const float a = head[ia], b = head[ib];
    head[ia] = a * c - b * s;
    head[ib] = a * s + b * c;
}
