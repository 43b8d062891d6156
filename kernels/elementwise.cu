// Element-wise and column-wise updates in place: biases broadcast over rows, a scale
// (the embedding multiplier) and a tanh soft-cap (the final logits).
//
// add_bias: x[r * stride + offset + i] += bias[i] for i < width (the bias of a fused
// projection covers the whole output row). One thread per element.
// scale_values: x[i] *= s for i < n.
// softcap_values: x[i] = cap * tanh(x[i] / cap) for i < n (as the CPU: x * (1 / cap)).

extern "C" __global__ void add_bias(float* __restrict__ x, const float* __restrict__ bias,
                                    int rows, int stride, int offset, int width) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * width) return;
    const u64 r = g / width, i = g % width;
    x[r * stride + offset + i] += bias[i];
}

extern "C" __global__ void scale_values(float* __restrict__ x, int n, float s) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g < (u64)n) x[g] *= s;
}

extern "C" __global__ void softcap_values(float* __restrict__ x, int n, float cap) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g < (u64)n) x[g] = cap * tanhf(x[g] * (1.0f / cap));
}
