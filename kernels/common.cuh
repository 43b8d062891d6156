// Helpers shared by every kernel module; prepended to each module's source before it is
// compiled (by NVRTC on a GPU, or by the host C++ compiler under kernels/emu for tests).
//
// Conventions of all modules:
// - Every kernel is `extern "C"` so its name is stable; the Rust wrapper that launches
//   it (src/device/kernels/ops.rs) checks shapes and sizes before the launch.
// - Activations and outputs are f32, row-major; the KV cache is f16 stored as raw u16.
// - Block sizes are multiples of 32 (whole warps); warp helpers assume all 32 lanes.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// Finite stand-in for -inf: exp(NEG_BIG - m) is 0 for any real m, with no inf - inf.
#define NEG_BIG (-3.0e38f)

__device__ __forceinline__ float neg_inf() {
#ifdef FERRITE_EMULATION
    return -__builtin_inff();
#else
    return __int_as_float(0xff800000);
#endif
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
#ifdef FERRITE_EMULATION
    return ferrite_emu_f16_to_f32(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// Round to nearest even, as the CPU path's `half::f16::from_f32` does.
__device__ __forceinline__ u16 f32_to_f16(float f) {
#ifdef FERRITE_EMULATION
    return ferrite_emu_f32_to_f16(f);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

__device__ __forceinline__ float load_f16(const u8* p) {
    return f16_to_f32(*(const u16*)p);
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread
// gets the result. Contains barriers: call from all threads of the block.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    const int lane = threadIdx.x % 32, wid = threadIdx.x / 32;
    v = warp_sum(v);
    if (lane == 0) part[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float s = (lane < (int)(blockDim.x / 32)) ? part[lane] : 0.0f;
        s = warp_sum(s);
        if (lane == 0) part[0] = s;
    }
    __syncthreads();
    const float r = part[0];
    __syncthreads();
    return r;
}
