// Row gather: out[i] = src[ids[i]] for rows of `width` floats (the rows whose logits a
// step needs). One thread per output element.

extern "C" __global__ void gather_rows(const float* __restrict__ src, const int* __restrict__ ids,
                                       float* __restrict__ out, int width, int rows) {
    const u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (g >= (u64)rows * width) return;
    const u64 i = g / width, c = g % width;
    out[g] = src[(u64)ids[i] * width + c];
}
