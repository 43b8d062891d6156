// Greedy sampling on device: the index of each row's largest logit.
//
// argmax_rows: one block per row; ties go to the lowest index and NaN never wins, as on
// the CPU path (`rowops::argmax`); a row with no value above -inf gives 0.

__device__ __forceinline__ void better(float v, int i, float* bv, int* bi) {
    if (v > *bv || (v == *bv && i < *bi)) {
        *bv = v;
        *bi = i;
    }
}

extern "C" __global__ void argmax_rows(const float* __restrict__ logits, int* __restrict__ out,
                                       int width) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* row = logits + (u64)blockIdx.x * width;
    float bv = neg_inf();
    int bi = 0x7fffffff;
    for (int i = threadIdx.x; i < width; i += blockDim.x) better(row[i], i, &bv, &bi);
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        better(ov, oi, &bv, &bi);
    }
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    if (lane == 0) {
        sv[wid] = bv;
        si[wid] = bi;
    }
    __syncthreads();
    if (wid == 0) {
        bv = neg_inf();
        bi = 0x7fffffff;
        if (lane < (int)(blockDim.x / 32)) {
            bv = sv[lane];
            bi = si[lane];
        }
        for (int o = 16; o > 0; o >>= 1) {
            const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
            const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
            better(ov, oi, &bv, &bi);
        }
        if (lane == 0) out[blockIdx.x] = (bi == 0x7fffffff) ? 0 : bi;
    }
}
