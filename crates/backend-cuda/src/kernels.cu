// Switchyard CUDA kernels, compiled at start-up by NVRTC for the device's architecture.
//
// Self-contained on purpose: no #include (NVRTC loaded from a driver-only or pip install has no
// CUDA headers), so half-precision conversions and warp shuffles are written in inline PTX.
// Numerics follow the CPU backend (crates/backend-cpu/src/ops.rs and model.rs) operation by
// operation; every kernel is tested against a scalar reference in tests/kernels.rs.
//
// Conventions: activations f32 row-major [tokens, width]; GEMM inputs bf16; KV cache f16 laid out
// per layer as [num_blocks * block_size, kv_dim]; block sizes are multiples of 32 threads.

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

#define NEG_INF __int_as_float(0xff800000)

struct bf16 {
    u16 bits;
};

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float(((u32)h) << 16); }

// Round to nearest even, NaN stays NaN (same as half::bf16::from_f32).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (u16)(u >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// Round to nearest even (same as half::f16::from_f32).
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

__device__ __forceinline__ void store(float* p, u64 i, float v) { p[i] = v; }
__device__ __forceinline__ void store(bf16* p, u64 i, float v) { p[i].bits = f32_to_bf16(v); }

__device__ __forceinline__ float shfl_xor_f32(float v, int lane_mask) {
    float r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=f"(r) : "f"(v), "r"(lane_mask));
    return r;
}

__device__ __forceinline__ int shfl_xor_i32(int v, int lane_mask) {
    int r;
    asm volatile("shfl.sync.bfly.b32 %0, %1, %2, 0x1f, 0xffffffff;" : "=r"(r) : "r"(v), "r"(lane_mask));
    return r;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) v += shfl_xor_f32(v, m);
    return v;
}

// Sum over the whole block; every thread gets the result. `red` holds 32 floats of shared memory.
// Must be reached by all threads of the block (it synchronizes).
__device__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();  // `red` may still be read by a previous call
    if (lane == 0) red[warp] = v;
    __syncthreads();
    float t = lane < nwarps ? red[lane] : 0.0f;
    return warp_sum(t);
}

// ---------------------------------------------------------------------------------------------
// Embedding: x[t, :] = table[ids[t], :] * scale (table bf16 [vocab, hidden]). Ids are checked
// on the host; an out-of-range id here (never expected) gives a zero row instead of a wild read.
extern "C" __global__ void embed_rows(const u16* table, const u32* ids, float* x, int hidden, u32 vocab,
                                      float scale, u64 total) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 t = i / hidden;
        const u64 c = i % hidden;
        const u32 id = ids[t];
        x[i] = id < vocab ? bf16_to_f32(table[(u64)id * hidden + c]) * scale : 0.0f;
    }
}

// ---------------------------------------------------------------------------------------------
// RMSNorm: out[r, :] = x[src, :] / sqrt(mean(x[src, :]^2) + eps) * w, src = rows ? rows[r] : r.
// One block per output row; a source row >= n_src_rows (never expected) is skipped.
template <typename Out>
__device__ void rmsnorm_impl(const float* x, const u32* rows, u32 n_src_rows, const float* w, Out* out, int n,
                             float eps) {
    __shared__ float red[32];
    const u64 r = blockIdx.x;
    const u64 src = rows ? (u64)rows[r] : r;
    if (src >= n_src_rows) return;  // uniform over the block
    const float* xr = x + src * n;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i];
        ss += v * v;
    }
    ss = block_sum(ss, red);
    const float inv = 1.0f / sqrtf(ss / (float)n + eps);
    Out* o = out + r * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) store(o, i, xr[i] * inv * w[i]);
}

extern "C" __global__ void rmsnorm_f32(const float* x, const u32* rows, u32 n_src_rows, const float* w,
                                       float* out, int n, float eps) {
    rmsnorm_impl(x, rows, n_src_rows, w, out, n, eps);
}

extern "C" __global__ void rmsnorm_bf16(const float* x, const u32* rows, u32 n_src_rows, const float* w,
                                        bf16* out, int n, float eps) {
    rmsnorm_impl(x, rows, n_src_rows, w, out, n, eps);
}

// Residual update and the next norm, one block per row:
//   x += post_w ? rmsnorm(o) * post_w : o
//   if next_w: h = bf16(rmsnorm(x) * next_w)
extern "C" __global__ void residual_rmsnorm(float* x, const float* o, const float* post_w, const float* next_w,
                                            bf16* h, int n, float eps) {
    __shared__ float red[32];
    const u64 r = blockIdx.x;
    float* xr = x + r * n;
    const float* orow = o + r * n;
    if (post_w) {
        float ss = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = orow[i];
            ss += v * v;
        }
        ss = block_sum(ss, red);
        const float inv = 1.0f / sqrtf(ss / (float)n + eps);
        for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] = xr[i] + orow[i] * inv * post_w[i];
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) xr[i] = xr[i] + orow[i];
    }
    if (next_w) {
        // Each thread reads back only the elements it wrote itself (same stride), so no barrier
        // is needed before this loop; block_sum synchronizes before anyone reuses `red`.
        float ss = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = xr[i];
            ss += v * v;
        }
        ss = block_sum(ss, red);
        const float inv = 1.0f / sqrtf(ss / (float)n + eps);
        bf16* hr = h + r * n;
        for (int i = threadIdx.x; i < n; i += blockDim.x) store(hr, i, xr[i] * inv * next_w[i]);
    }
}

// y[i] += b[i % cols]
extern "C" __global__ void add_bias(float* y, const float* b, int cols, u64 total) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        y[i] += b[i % cols];
    }
}

// ---------------------------------------------------------------------------------------------
// Per-head RMSNorm (optional) + RoPE (+ query scale) in place on the q and k parts of a fused
// qkv buffer [tokens, row_stride] = [q heads | k heads | v heads]. Grid (tokens, n_q + n_k heads).
// neox: pairs (i, i + d/2); otherwise (2i, 2i+1). angle = pos * inv_freq[i].
// Dynamic shared memory: head_dim floats.
extern "C" __global__ void head_norm_rope(float* qkv, int row_stride, int n_q_heads, int head_dim,
                                          const float* q_norm, const float* k_norm, float eps,
                                          const u32* positions, const float* inv_freq, int neox,
                                          float q_scale) {
    extern __shared__ float sh[];
    __shared__ float red[32];
    const u64 t = blockIdx.x;
    const int hh = blockIdx.y;
    const bool is_q = hh < n_q_heads;
    float* head = qkv + t * row_stride + (u64)hh * head_dim;
    const float* nw = is_q ? q_norm : k_norm;
    for (int i = threadIdx.x; i < head_dim; i += blockDim.x) sh[i] = head[i];
    __syncthreads();
    if (nw) {  // uniform over the block
        float ss = 0.0f;
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) ss += sh[i] * sh[i];
        ss = block_sum(ss, red);  // all reads of sh above happen before its barrier
        const float inv = 1.0f / sqrtf(ss / (float)head_dim + eps);
        for (int i = threadIdx.x; i < head_dim; i += blockDim.x) sh[i] = sh[i] * inv * nw[i];
        __syncthreads();
    }
    const int half = head_dim / 2;
    const float pos = (float)positions[t];
    const float scale = is_q ? q_scale : 1.0f;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        const int a = neox ? i : 2 * i;
        const int b = neox ? i + half : 2 * i + 1;
        float s, c;
        sincosf(pos * inv_freq[i], &s, &c);
        const float x0 = sh[a];
        const float x1 = sh[b];
        head[a] = (x0 * c - x1 * s) * scale;
        head[b] = (x0 * s + x1 * c) * scale;
    }
}

// ---------------------------------------------------------------------------------------------
// KV-cache write: k/v of token t (from the fused qkv buffer) to cache row slots[t], as f16.
// Slots are checked on the host; one >= n_slots (never expected) is skipped.
extern "C" __global__ void kv_write(const float* qkv, int row_stride, int k_off, int v_off, int kv_dim,
                                    const u32* slots, u32 n_slots, u16* kc, u16* vc, u64 total) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 t = i / kv_dim;
        const u64 c = i % kv_dim;
        const u32 slot = slots[t];
        if (slot >= n_slots) continue;
        const u64 dst = (u64)slot * kv_dim + c;
        const float* row = qkv + t * row_stride;
        kc[dst] = f32_to_f16(row[k_off + c]);
        vc[dst] = f32_to_f16(row[v_off + c]);
    }
}

// Copies whole KV blocks: cache[pairs[2p+1]] = cache[pairs[2p]] for p = blockIdx.y. The pairs of
// one launch must be independent (no block both written and read); ids >= num_blocks are skipped.
extern "C" __global__ void copy_blocks(u16* cache, const u32* pairs, u32 num_blocks, u64 block_elems) {
    const u32 sb = pairs[2 * blockIdx.y];
    const u32 db = pairs[2 * blockIdx.y + 1];
    if (sb >= num_blocks || db >= num_blocks) return;
    const u64 src = (u64)sb * block_elems;
    const u64 dst = (u64)db * block_elems;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < block_elems; i += (u64)gridDim.x * blockDim.x) {
        cache[dst + i] = cache[src + i];
    }
}

// ---------------------------------------------------------------------------------------------
// Paged attention over varlen sequences (prefill chunks and decodes mixed), causal, optional
// sliding window, GQA. One block per (token, query head); each warp walks keys j = lo + warp,
// lo + warp + nwarps, ... with an online softmax, and the warps are merged at the end.
// q is already RoPE'd and scaled; keys/values come from the f16 cache (this step's tokens were
// written by kv_write before). Token t of sequence s = tok_seq[t] at position p sees keys
// lo..=p, lo = window > 0 ? max(0, p + 1 - window) : 0, key j at cache row
// block_tables[bt_off[s] + j / block_size] * block_size + j % block_size.
// The host validates sequences, positions and block ids; the bounds checks here (n_seqs, bt_len,
// num_blocks) only keep a malformed batch from reading outside the buffers.
// Dynamic shared memory: nwarps * (head_dim + 2) floats. head_dim <= 32 * ATT_PER_LANE.
#define ATT_PER_LANE 8

template <typename Out>
__device__ void attention_impl(const float* q, int q_stride, const u16* kc, const u16* vc, Out* out,
                               int out_stride, const u32* positions, const u32* tok_seq, const u32* bt_off,
                               const u32* block_tables, u32 n_seqs, u32 bt_len, u32 num_blocks,
                               int block_size, int n_heads, int n_kv_heads, int head_dim, int window) {
    extern __shared__ float sm[];
    const u64 t = blockIdx.x;
    const int h = blockIdx.y;
    const int kvh = h / (n_heads / n_kv_heads);
    const u64 kv_dim = (u64)n_kv_heads * head_dim;
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    const int pos = (int)positions[t];
    const u32 s = tok_seq[t];
    const u64 off = s < n_seqs ? (u64)bt_off[s] : 0;
    Out* orow = out + t * out_stride + (u64)h * head_dim;
    if (s >= n_seqs || pos < 0 || off + (u64)(pos / block_size) >= bt_len) {  // uniform over the block
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) store(orow, d, 0.0f);
        return;
    }
    const u32* bt = block_tables + off;
    const int lo = window > 0 ? max(0, pos + 1 - window) : 0;
    const float* qh = q + t * q_stride + (u64)h * head_dim;

    float qr[ATT_PER_LANE];
    float acc[ATT_PER_LANE];
#pragma unroll
    for (int r = 0; r < ATT_PER_LANE; ++r) {
        const int d = lane + 32 * r;
        qr[r] = d < head_dim ? qh[d] : 0.0f;
        acc[r] = 0.0f;
    }
    float m = NEG_INF;
    float l = 0.0f;
    for (int j = lo + warp; j <= pos; j += nwarps) {  // uniform within a warp
        const u32 blk = bt[j / block_size];
        const u64 row = (u64)(blk < num_blocks ? blk : 0u) * block_size + (u64)(j % block_size);
        const u16* kr = kc + row * kv_dim + (u64)kvh * head_dim;
        const u16* vr = vc + row * kv_dim + (u64)kvh * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int r = 0; r < ATT_PER_LANE; ++r) {
            const int d = lane + 32 * r;
            if (d < head_dim) dot += qr[r] * f16_to_f32(kr[d]);
        }
        dot = warp_sum(dot);
        const float m_new = fmaxf(m, dot);
        const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
        const float p = expf(dot - m_new);
        l = l * corr + p;
#pragma unroll
        for (int r = 0; r < ATT_PER_LANE; ++r) {
            const int d = lane + 32 * r;
            if (d < head_dim) acc[r] = acc[r] * corr + p * f16_to_f32(vr[d]);
        }
        m = m_new;
    }

    float* sm_m = sm;
    float* sm_l = sm + nwarps;
    float* sm_acc = sm + 2 * nwarps;
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int r = 0; r < ATT_PER_LANE; ++r) {
        const int d = lane + 32 * r;
        if (d < head_dim) sm_acc[warp * head_dim + d] = acc[r];
    }
    __syncthreads();
    // Key p itself is always visible, so at least one warp has a finite max.
    float big = NEG_INF;
    for (int w = 0; w < nwarps; ++w) big = fmaxf(big, sm_m[w]);
    float den = 0.0f;
    for (int w = 0; w < nwarps; ++w)
        if (sm_m[w] != NEG_INF) den += sm_l[w] * expf(sm_m[w] - big);
    const float inv_den = 1.0f / den;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float num = 0.0f;
        for (int w = 0; w < nwarps; ++w)
            if (sm_m[w] != NEG_INF) num += sm_acc[w * head_dim + d] * expf(sm_m[w] - big);
        store(orow, d, num * inv_den);
    }
}

extern "C" __global__ void attention_f32(const float* q, int q_stride, const u16* kc, const u16* vc, float* out,
                                         int out_stride, const u32* positions, const u32* tok_seq,
                                         const u32* bt_off, const u32* block_tables, u32 n_seqs, u32 bt_len,
                                         u32 num_blocks, int block_size, int n_heads, int n_kv_heads,
                                         int head_dim, int window) {
    attention_impl(q, q_stride, kc, vc, out, out_stride, positions, tok_seq, bt_off, block_tables, n_seqs,
                   bt_len, num_blocks, block_size, n_heads, n_kv_heads, head_dim, window);
}

extern "C" __global__ void attention_bf16(const float* q, int q_stride, const u16* kc, const u16* vc, bf16* out,
                                          int out_stride, const u32* positions, const u32* tok_seq,
                                          const u32* bt_off, const u32* block_tables, u32 n_seqs, u32 bt_len,
                                          u32 num_blocks, int block_size, int n_heads, int n_kv_heads,
                                          int head_dim, int window) {
    attention_impl(q, q_stride, kc, vc, out, out_stride, positions, tok_seq, bt_off, block_tables, n_seqs,
                   bt_len, num_blocks, block_size, n_heads, n_kv_heads, head_dim, window);
}

// ---------------------------------------------------------------------------------------------
// Gated MLP activation: out[t, c] = act(gu[t, c]) * gu[t, ffn + c] (gu = [gate | up] per row).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float c = 0.7978846f;  // sqrt(2/pi), the CPU backend's literal
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}

__device__ __forceinline__ float silu(float x) { return x / (1.0f + expf(-x)); }

template <typename Out>
__device__ void act_mul_impl(const float* gu, Out* out, int ffn, int act, u64 total) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        const u64 t = i / ffn;
        const u64 c = i % ffn;
        const float g = gu[t * 2 * ffn + c];
        const float u = gu[t * 2 * ffn + ffn + c];
        const float a = act == 0 ? gelu_tanh(g) : silu(g);
        store(out, i, a * u);
    }
}

extern "C" __global__ void act_mul_f32(const float* gu, float* out, int ffn, int act, u64 total) {
    act_mul_impl(gu, out, ffn, act, total);
}

extern "C" __global__ void act_mul_bf16(const float* gu, bf16* out, int ffn, int act, u64 total) {
    act_mul_impl(gu, out, ffn, act, total);
}

// ---------------------------------------------------------------------------------------------
// x = cap * tanh(x / cap)
extern "C" __global__ void softcap(float* x, float cap, u64 total) {
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
        x[i] = cap * tanhf(x[i] / cap);
    }
}

// Greedy argmax per row (one block per row): the lowest index among the maximal values; NaNs are
// skipped (a row of only NaNs gives 0).
__device__ __forceinline__ bool better(float v, int i, float v2, int i2) {
    if (i < 0) return false;
    if (i2 < 0) return true;
    return v > v2 || (v == v2 && i < i2);
}

extern "C" __global__ void argmax_rows(const float* x, int cols, u32* out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const float* row = x + (u64)blockIdx.x * cols;
    float best = NEG_INF;
    int bi = -1;
    for (int i = threadIdx.x; i < cols; i += blockDim.x) {
        const float v = row[i];
        if (v == v && (bi < 0 || v > best)) {
            best = v;
            bi = i;
        }
    }
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) {
        const float v2 = shfl_xor_f32(best, m);
        const int i2 = shfl_xor_i32(bi, m);
        if (better(v2, i2, best, bi)) {
            best = v2;
            bi = i2;
        }
    }
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    if (lane == 0) {
        sv[warp] = best;
        si[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float b = sv[0];
        int ib = si[0];
        for (int w = 1; w < nwarps; ++w)
            if (better(sv[w], si[w], b, ib)) {
                b = sv[w];
                ib = si[w];
            }
        out[blockIdx.x] = ib < 0 ? 0u : (u32)ib;
    }
}
