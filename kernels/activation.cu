// Gating of the fused gate|up projection: rows of 2*ff floats (gate then up) become rows
// of ff floats, out = act(gate) * up. One thread per output element.
//
// silu_gate_up: act(g) = g / (1 + e^-g) (SwiGLU).
// gelu_gate_up: act(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))) (GeGLU, the
// tanh approximation, as `model::ops::gelu_gate_up`).

extern "C" __global__ void silu_gate_up(const float* __restrict__ gu, float* __restrict__ out,
                                        int rows, int ff) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * ff) return;
    const u64 r = g / ff, i = g % ff;
    const float a = gu[r * 2 * ff + i], b = gu[r * 2 * ff + ff + i];
    out[g] = a / (1.0f + expf(-a)) * b;
}

extern "C" __global__ void gelu_gate_up(const float* __restrict__ gu, float* __restrict__ out,
                                        int rows, int ff) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * ff) return;
    const u64 r = g / ff, i = g % ff;
    const float a = gu[r * 2 * ff + i], b = gu[r * 2 * ff + ff + i];
    const float inner = 0.7978846f * (a + 0.044715f * a * a * a);
    out[g] = 0.5f * a * (1.0f + tanhf(inner)) * b;
}
