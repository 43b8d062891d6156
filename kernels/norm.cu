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
