// CPU emulation of the CUDA builtins used by kernels.cu: each CUDA thread is a fiber; blocks run
// one after another; __syncthreads and warp shuffles are scheduling points.
#include <cmath>
#include <cstring>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
struct emu_uint3 { unsigned x, y, z; };
emu_uint3 emu_thread_idx();
emu_uint3 emu_block_idx();
emu_uint3 emu_block_dim();
emu_uint3 emu_grid_dim();
void emu_syncthreads();
u32 emu_shfl_xor(u32 v, int mask);
void* emu_dyn_smem();
#define threadIdx (emu_thread_idx())
#define blockIdx (emu_block_idx())
#define blockDim (emu_block_dim())
#define gridDim (emu_grid_dim())
#define __syncthreads() emu_syncthreads()
#define __global__
#define __device__
#define __forceinline__ inline
#define __shared__ static
static inline float __uint_as_float(u32 u) { float f; memcpy(&f, &u, 4); return f; }
static inline u32 __float_as_uint(float f) { u32 u; memcpy(&u, &f, 4); return u; }
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline float f16_to_f32(u16 h) { _Float16 x; memcpy(&x, &h, 2); return (float)x; }
static inline u16 f32_to_f16(float f) { _Float16 x = (_Float16)f; u16 h; memcpy(&h, &x, 2); return h; }
static inline float shfl_xor_f32(float v, int m) { return __uint_as_float(emu_shfl_xor(__float_as_uint(v), m)); }
static inline int shfl_xor_i32(int v, int m) { return (int)emu_shfl_xor((u32)v, m); }
