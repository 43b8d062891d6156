// RMSNorm fused with the residual add, one block per row.
//
// rms_norm_residual: if `delta` is non-null, first x[r] += delta[r] (written back: x is
// the residual stream), then out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w. With a null
// `delta` it is a plain RMSNorm. `out` must not alias `x`.

extern "C" __global__ void rms_norm_residual(float* __restrict__ x,
                                             const float* __restrict__ delta,
                                             const float* __restrict__ w,
                                             float* __restrict__ out, int width, float eps) {
    float* xr = x + (u64)blockIdx.x * width;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v += delta[(u64)blockIdx.x * width + i];
            xr[i] = v;
        }
        ss += v * v;
    }
    const float inv = rsqrtf(block_sum(ss) / (float)width + eps);
    float* o = out + (u64)blockIdx.x * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = xr[i] * inv * w[i];
}

// rms_norm_heads: per-head RMSNorm in place (Q/K norms): each of the `n_heads` heads of
// width `head_dim` at column `offset` of rows `stride` floats apart becomes
// x / sqrt(mean(x^2) + eps) * w (w: head_dim values shared by the heads).
// Grid (rows, n_heads), one warp per head.
extern "C" __global__ void rms_norm_heads(float* __restrict__ x, const float* __restrict__ w,
                                          int stride, int offset, int head_dim, float eps) {
    float* h = x + (u64)blockIdx.x * stride + offset + (u64)blockIdx.y * head_dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < head_dim; i += 32) ss += h[i] * h[i];
    const float inv = rsqrtf(warp_sum(ss) / (float)head_dim + eps);
    for (int i = threadIdx.x; i < head_dim; i += 32) h[i] = h[i] * inv * w[i];
}
