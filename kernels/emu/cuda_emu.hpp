// A small CUDA execution model on the host, so the kernels in kernels/*.cu can be tested
// on machines without a GPU (tests/gpu_kernels.rs compiles them with this header forced
// in front, links them into a shared library and launches them through
// `ferrite_emu_launch`, the same argument array a CUDA launch takes).
//
// What it models: a grid of blocks run one after another; inside a block, one OS thread
// per CUDA thread, so `__syncthreads` is a real barrier over the block and warp shuffles
// are a real exchange between the 32 threads of a warp (each behind a barrier of its
// warp). `__shared__` variables are function statics: shared by the threads of the one
// block that runs at a time. Launches are serialised by a global lock.
//
// What it does not model: timing, memory ordering beyond those barriers, partial-warp
// masks (every shuffle must be reached by all 32 lanes, as our kernels guarantee), or
// inline PTX (kernels keep PTX behind `#ifndef FERRITE_EMULATION`). The one PTX
// instruction emulated is the tensor-core `mma.sync.aligned.m16n8k16.row.col` with f16
// inputs and f32 accumulation (`ferrite_emu_mma_m16n8k16`): the warp's fragments are
// exchanged and each lane computes its own outputs, in f32, from the lanes that hold
// each element as PTX lays them out.

#pragma once
#include <array>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#define FERRITE_EMULATION 1
#define __global__
#define __device__ static inline
#define __forceinline__
#define __shared__ static

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};

inline dim3 gridDim, blockDim;
inline thread_local dim3 threadIdx, blockIdx;

namespace ferrite_emu {

struct Block {
    explicit Block(unsigned n) : all(n), slots(n), frags(n) {
        for (unsigned w = 0; w < n / 32; w++) warps.emplace_back(new std::barrier<>(32));
    }
    std::barrier<> all;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> slots;
    std::vector<std::array<uint32_t, 6>> frags;
};

inline thread_local Block* current = nullptr;
inline thread_local unsigned tid = 0;

template <class T>
T exchange(T v, unsigned src_lane) {
    static_assert(sizeof(T) <= 8, "shuffle of at most 8 bytes");
    const unsigned base = tid - tid % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    current->slots[tid] = bits;
    current->warps[tid / 32]->arrive_and_wait();
    bits = current->slots[base + (src_lane % 32)];
    current->warps[tid / 32]->arrive_and_wait();
    T r;
    std::memcpy(&r, &bits, sizeof(T));
    return r;
}

inline std::mutex& launch_lock() {
    static std::mutex m;
    return m;
}

using Launcher = std::function<void(void**)>;

inline std::map<std::string, Launcher>& registry() {
    static std::map<std::string, Launcher> r;
    return r;
}

template <class... A, std::size_t... I>
void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

struct Reg {
    template <class... A>
    Reg(const char* name, void (*f)(A...)) {
        registry()[name] = [f](void** args) { call_with(f, args, std::index_sequence_for<A...>{}); };
    }
};

// Runs `body` as a grid of blocks of `block` threads. Returns 0, or a negative code when
// the shape cannot be emulated.
inline int launch(dim3 grid, dim3 block, const std::function<void()>& body) {
    const unsigned n = block.x * block.y * block.z;
    if (n == 0 || n % 32 != 0 || n > 1024) return -2;
    std::lock_guard<std::mutex> guard(launch_lock());
    gridDim = grid;
    blockDim = block;
    Block shared(n);
    std::vector<std::thread> threads;
    threads.reserve(n);
    for (unsigned t = 0; t < n; t++) {
        threads.emplace_back([&, t] {
            current = &shared;
            tid = t;
            threadIdx = dim3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            for (unsigned z = 0; z < grid.z; z++)
                for (unsigned y = 0; y < grid.y; y++)
                    for (unsigned x = 0; x < grid.x; x++) {
                        blockIdx = dim3{x, y, z};
                        body();
                        shared.all.arrive_and_wait();  // the block ends for everyone
                    }
        });
    }
    for (auto& th : threads) th.join();
    return 0;
}

}  // namespace ferrite_emu

inline void __syncthreads() { ferrite_emu::current->all.arrive_and_wait(); }

template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return ferrite_emu::exchange(v, (ferrite_emu::tid % 32) ^ (unsigned)mask);
}

template <class T>
T __shfl_sync(unsigned, T v, int src) {
    return ferrite_emu::exchange(v, (unsigned)src);
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }

inline float ferrite_emu_f16_to_f32(unsigned short h) {
    _Float16 v;
    std::memcpy(&v, &h, 2);
    return (float)v;
}

inline unsigned short ferrite_emu_f32_to_f16(float f) {
    const _Float16 v = (_Float16)f;
    unsigned short h;
    std::memcpy(&h, &v, 2);
    return h;
}

// Registers kernel `name` of this translation unit for `ferrite_emu_launch`.
#define FERRITE_EMU_KERNEL(name) static ferrite_emu::Reg ferrite_emu_reg_##name(#name, &name);

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for the calling warp (all 32 lanes
// must call it): d += A (16 x 16) * B (16 x 8). With g = lane / 4 and t = lane % 4, lane
// holds a = {A[g][2t, 2t+1], A[g+8][2t, 2t+1], A[g][2t+8, 2t+9], A[g+8][2t+8, 2t+9]},
// b = {B[2t, 2t+1][g], B[2t+8, 2t+9][g]} (f16 pairs, the lower index in the low 16 bits)
// and d = {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}.
inline void ferrite_emu_mma_m16n8k16(float* d, const unsigned* a, const unsigned* b) {
    using namespace ferrite_emu;
    const unsigned base = tid - tid % 32, lane = tid % 32;
    auto& mine = current->frags[tid];
    for (int i = 0; i < 4; i++) mine[i] = a[i];
    mine[4] = b[0];
    mine[5] = b[1];
    current->warps[tid / 32]->arrive_and_wait();
    // Element `half` of register `reg` of lane (g, t).
    auto elem = [&](unsigned g, unsigned t, int reg, unsigned k) {
        const uint32_t v = current->frags[base + g * 4 + t][reg];
        return ferrite_emu_f16_to_f32((unsigned short)((k & 1) ? v >> 16 : v & 0xffff));
    };
    const unsigned g = lane / 4, t = lane % 4;
    for (int e = 0; e < 4; e++) {
        const unsigned row = g + (e >= 2 ? 8 : 0), col = 2 * t + (e & 1);
        float s = 0.0f;
        for (unsigned k = 0; k < 16; k++) {
            const unsigned kt = (k % 8) / 2;
            const float av = elem(row % 8, kt, (row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0), k);
            const float bv = elem(col, kt, 4 + (k >= 8 ? 1 : 0), k);
            s += av * bv;
        }
        d[e] += s;
    }
    current->warps[tid / 32]->arrive_and_wait();
}
