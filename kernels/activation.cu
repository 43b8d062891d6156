// SiLU gating of the fused gate|up projection: rows of 2*ff floats (gate then up) become
// rows of ff floats, out = silu(gate) * up = gate / (1 + e^-gate) * up.
// One thread per output element.

extern "C" __global__ void silu_gate_up(const float* __restrict__ gu, float* __restrict__ out,
                                        int rows, int ff) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * ff) return;
    const u64 r = g / ff, i = g % ff;
    const float a = gu[r * 2 * ff + i], b = gu[r * 2 * ff + ff + i];
    out[g] = a / (1.0f + expf(-a)) * b;
}
