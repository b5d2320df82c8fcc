// Fake libcuda + libcublas for running the CUDA backend and its tests on a CPU: device memory is
// host memory, the kernels are kernels.cu compiled as C++ (see gen.py) and run by a fiber
// scheduler (one fiber per CUDA thread, blocks one after another), cublasGemmEx is a plain loop.
// NVRTC is the real library (it compiles the real source; the image is then ignored). x86-64
// Linux only (the fiber switch is a few lines of assembly).
#include "kernels_emu.cpp"
#include <vector>
#include <string>
#include <mutex>

// ---------------------------------------------------------------- fibers
extern "C" void emu_switch(void** save_sp, void* new_sp);
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");

enum State { RUNNABLE, AT_BLOCK, AT_WARP1, DONE };
struct Fiber { void* sp; char* stack; State state; unsigned tid; };
static const size_t STACK = 128 * 1024;
static std::vector<Fiber> fibers;
static void* sched_sp;
static int cur = -1;
static emu_uint3 g_block, g_grid, g_bidx;
static void (*g_call)(void**);
static void** g_params;
static std::vector<char> g_smem;
static std::vector<u32> warp_buf;

emu_uint3 emu_thread_idx() { return {fibers[cur].tid, 0, 0}; }
emu_uint3 emu_block_idx() { return g_bidx; }
emu_uint3 emu_block_dim() { return g_block; }
emu_uint3 emu_grid_dim() { return g_grid; }
void* emu_dyn_smem() { return g_smem.data(); }

static void yield_to_sched() { emu_switch(&fibers[cur].sp, sched_sp); }
void emu_syncthreads() { fibers[cur].state = AT_BLOCK; yield_to_sched(); }
static void warp_barrier() { fibers[cur].state = AT_WARP1; yield_to_sched(); }
u32 emu_shfl_xor(u32 v, int mask) {
    unsigned t = fibers[cur].tid;
    warp_buf[t] = v;
    warp_barrier();
    u32 r = warp_buf[(t & ~31u) | ((t & 31u) ^ (unsigned)mask)];
    warp_barrier();
    return r;
}

static void fiber_entry() {
    g_call(g_params);
    fibers[cur].state = DONE;
    yield_to_sched();
    abort();
}

static void init_fiber(Fiber& f, unsigned tid) {
    if (!f.stack) f.stack = (char*)malloc(STACK);
    uint64_t* top = (uint64_t*)(((uintptr_t)(f.stack + STACK)) & ~(uintptr_t)15);
    *--top = 0;
    *--top = (uint64_t)(void*)&fiber_entry;
    for (int i = 0; i < 6; ++i) *--top = 0;
    f.sp = top;
    f.state = RUNNABLE;
    f.tid = tid;
}

static void run_block(unsigned nthreads) {
    for (unsigned t = 0; t < nthreads; ++t) init_fiber(fibers[t], t);
    for (;;) {
        bool ran = false;
        for (unsigned t = 0; t < nthreads; ++t) {
            if (fibers[t].state == RUNNABLE) {
                cur = t;
                emu_switch(&sched_sp, fibers[t].sp);
                ran = true;
            }
        }
        bool all_done = true, all_block = true, released = false;
        for (unsigned t = 0; t < nthreads; ++t) {
            if (fibers[t].state != DONE) all_done = false;
            if (fibers[t].state != DONE && fibers[t].state != AT_BLOCK) all_block = false;
        }
        if (all_done) return;
        for (unsigned w = 0; w * 32 < nthreads; ++w) {
            bool all = true;
            for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; ++l)
                if (fibers[w * 32 + l].state != AT_WARP1) all = false;
            if (all) {
                for (unsigned l = 0; l < 32 && w * 32 + l < nthreads; ++l) fibers[w * 32 + l].state = RUNNABLE;
                released = true;
            }
        }
        if (all_block) {
            for (unsigned t = 0; t < nthreads; ++t)
                if (fibers[t].state == AT_BLOCK) fibers[t].state = RUNNABLE;
            released = true;
        }
        if (!ran && !released) {
            fprintf(stderr, "EMU DEADLOCK in block (%u,%u)\n", g_bidx.x, g_bidx.y);
            for (unsigned t = 0; t < nthreads; ++t) fprintf(stderr, " %d", fibers[t].state);
            fprintf(stderr, "\n");
            abort();
        }
    }
}

static std::mutex launch_mu;
static void emu_launch(void (*call)(void**), void** params, emu_uint3 grid, emu_uint3 block, unsigned smem) {
    std::lock_guard<std::mutex> g(launch_mu);
    if (block.y != 1 || block.z != 1 || block.x % 32 != 0) { fprintf(stderr, "EMU: bad block dims\n"); abort(); }
    g_call = call; g_params = params; g_grid = grid; g_block = block;
    if (fibers.size() < block.x) fibers.resize(block.x, Fiber{nullptr, nullptr, DONE, 0});
    warp_buf.assign(block.x, 0);
    for (unsigned z = 0; z < grid.z; ++z)
        for (unsigned y = 0; y < grid.y; ++y)
            for (unsigned x = 0; x < grid.x; ++x) {
                g_bidx = {x, y, z};
                g_smem.assign(smem + 16, (char)0xFF);
                run_block(block.x);
            }
}

// ---------------------------------------------------------------- kernel table
#define A(i, T) (*(T*)p[i])
struct KernelEntry { const char* name; void (*call)(void**); };
static KernelEntry kernels[] = {
    {"embed_rows", [](void** p) { embed_rows(A(0, const u16*), A(1, const u32*), A(2, float*), A(3, int), A(4, u32), A(5, float), A(6, u64)); }},
    {"rmsnorm_f32", [](void** p) { rmsnorm_f32(A(0, const float*), A(1, const u32*), A(2, u32), A(3, const float*), A(4, float*), A(5, int), A(6, float)); }},
    {"rmsnorm_bf16", [](void** p) { rmsnorm_bf16(A(0, const float*), A(1, const u32*), A(2, u32), A(3, const float*), A(4, bf16*), A(5, int), A(6, float)); }},
    {"residual_rmsnorm", [](void** p) { residual_rmsnorm(A(0, float*), A(1, const float*), A(2, const float*), A(3, const float*), A(4, bf16*), A(5, int), A(6, float)); }},
    {"add_bias", [](void** p) { add_bias(A(0, float*), A(1, const float*), A(2, int), A(3, u64)); }},
    {"head_norm_rope", [](void** p) { head_norm_rope(A(0, float*), A(1, int), A(2, int), A(3, int), A(4, const float*), A(5, const float*), A(6, float), A(7, const u32*), A(8, const float*), A(9, int), A(10, float)); }},
    {"kv_write", [](void** p) { kv_write(A(0, const float*), A(1, int), A(2, int), A(3, int), A(4, int), A(5, const u32*), A(6, u32), A(7, u16*), A(8, u16*), A(9, u64)); }},
    {"copy_blocks", [](void** p) { copy_blocks(A(0, u16*), A(1, const u32*), A(2, u32), A(3, u64)); }},
    {"attention_f32", [](void** p) { attention_f32(A(0, const float*), A(1, int), A(2, const u16*), A(3, const u16*), A(4, float*), A(5, int), A(6, const u32*), A(7, const u32*), A(8, const u32*), A(9, const u32*), A(10, u32), A(11, u32), A(12, u32), A(13, int), A(14, int), A(15, int), A(16, int), A(17, int)); }},
    {"attention_bf16", [](void** p) { attention_bf16(A(0, const float*), A(1, int), A(2, const u16*), A(3, const u16*), A(4, bf16*), A(5, int), A(6, const u32*), A(7, const u32*), A(8, const u32*), A(9, const u32*), A(10, u32), A(11, u32), A(12, u32), A(13, int), A(14, int), A(15, int), A(16, int), A(17, int)); }},
    {"act_mul_f32", [](void** p) { act_mul_f32(A(0, const float*), A(1, float*), A(2, int), A(3, int), A(4, u64)); }},
    {"act_mul_bf16", [](void** p) { act_mul_bf16(A(0, const float*), A(1, bf16*), A(2, int), A(3, int), A(4, u64)); }},
    {"softcap", [](void** p) { softcap(A(0, float*), A(1, float), A(2, u64)); }},
    {"argmax_rows", [](void** p) { argmax_rows(A(0, const float*), A(1, int), A(2, u32*)); }},
};

// ---------------------------------------------------------------- driver API
typedef int CUresult;
static thread_local void* current_ctx = nullptr;
static size_t live_bytes = 0;
extern "C" {
CUresult cuInit(unsigned) { return 0; }
CUresult cuDriverGetVersion(int* v) { *v = 12080; return 0; }
CUresult cuDeviceGetCount(int* c) { *c = 1; return 0; }
CUresult cuDeviceGet(int* d, int ord) { if (ord != 0) return 101; *d = 0; return 0; }
CUresult cuDeviceGetName(char* n, int len, int) { snprintf(n, len, "Emulated GPU (fake libcuda)"); return 0; }
CUresult cuDeviceGetAttribute(int* v, int attr, int) {
    switch (attr) { case 75: *v = 9; break; case 76: *v = 0; break; case 16: *v = 4; break; default: *v = 0; }
    return 0;
}
CUresult cuDeviceTotalMem_v2(size_t* b, int) { *b = 80ull << 30; return 0; }
CUresult cuDevicePrimaryCtxRetain(void** c, int) { *c = (void*)0x1000; return 0; }
CUresult cuDevicePrimaryCtxRelease_v2(int) { return 0; }
CUresult cuCtxGetCurrent(void** c) { *c = current_ctx; return 0; }
CUresult cuCtxSetCurrent(void* c) { current_ctx = c; return 0; }
CUresult cuCtxSynchronize() { return 0; }
CUresult cuStreamCreate(void** s, unsigned) { *s = malloc(8); return 0; }
CUresult cuStreamDestroy_v2(void* s) { free(s); return 0; }
CUresult cuStreamSynchronize(void*) { return 0; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return 0; }
CUresult cuEventCreate(void** e, unsigned) { *e = malloc(8); return 0; }
CUresult cuEventRecord(void*, void*) { return 0; }
CUresult cuEventSynchronize(void*) { return 0; }
CUresult cuEventDestroy_v2(void* e) { free(e); return 0; }
CUresult cuMemAlloc_v2(u64* p, size_t n) {
    void* m = malloc(n ? n : 1);
    memset(m, 0xFF, n);  // poison: uninitialized floats read as NaN
    *p = (u64)m;
    live_bytes += n;
    return 0;
}
CUresult cuMemFree_v2(u64 p) { free((void*)p); return 0; }
CUresult cuMemAllocAsync(u64* p, size_t n, void*) { return cuMemAlloc_v2(p, n); }
CUresult cuMemFreeAsync(u64 p, void*) { return cuMemFree_v2(p); }
CUresult cuMemsetD8Async(u64 p, unsigned char v, size_t n, void*) { memset((void*)p, v, n); return 0; }
CUresult cuMemsetD8_v2(u64 p, unsigned char v, size_t n) { memset((void*)p, v, n); return 0; }
CUresult cuMemcpyHtoDAsync_v2(u64 d, const void* s, size_t n, void*) { memcpy((void*)d, s, n); return 0; }
CUresult cuMemcpyDtoHAsync_v2(void* d, u64 s, size_t n, void*) { memcpy(d, (void*)s, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(u64 d, u64 s, size_t n, void*) { memmove((void*)d, (void*)s, n); return 0; }
CUresult cuMemGetInfo_v2(size_t* f, size_t* t) { *t = 80ull << 30; *f = *t - live_bytes; return 0; }
CUresult cuModuleLoadData(void** m, const void*) { *m = (void*)0x2000; return 0; }
CUresult cuModuleUnload(void*) { return 0; }
CUresult cuModuleGetFunction(void** f, void*, const char* name) {
    for (auto& k : kernels) if (std::string(k.name) == name) { *f = (void*)&k; return 0; }
    return 500;
}
CUresult cuLaunchKernel(void* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, void*, void** params, void**) {
    if (!current_ctx) { fprintf(stderr, "EMU: launch without a current context\n"); return 201; }
    emu_launch(((KernelEntry*)f)->call, params, {gx, gy, gz}, {bx, by, bz}, smem);
    return 0;
}
// NVRTC itself dlopens libcuda and asks for this private table; saying no is fine.
CUresult cuGetExportTable(const void** table, const void*) { *table = nullptr; return 500; }
CUresult cuGetErrorString(int, const char** s) { *s = "emulated error"; return 0; }
CUresult cuGetErrorName(int, const char** s) { *s = "EMU_ERROR"; return 0; }

// ---------------------------------------------------------------- cuBLAS
int cublasCreate_v2(void** h) { *h = malloc(8); return 0; }
int cublasDestroy_v2(void* h) { free(h); return 0; }
int cublasSetStream_v2(void*, void*) { return 0; }
static float ld(const void* p, int type, size_t i) {
    switch (type) {
    case 0: return ((const float*)p)[i];
    case 2: return f16_to_f32(((const u16*)p)[i]);
    case 14: return bf16_to_f32(((const u16*)p)[i]);
    }
    fprintf(stderr, "EMU: gemm type %d\n", type); abort();
}
static void st(void* p, int type, size_t i, float v) {
    switch (type) {
    case 0: ((float*)p)[i] = v; return;
    case 2: ((u16*)p)[i] = f32_to_f16(v); return;
    case 14: ((u16*)p)[i] = f32_to_bf16(v); return;
    }
    abort();
}
int cublasGemmEx(void*, int ta, int tb, int m, int n, int k, const void* alpha, const void* a, int at, int lda,
                 const void* b, int bt, int ldb, const void* beta, void* c, int ct, int ldc, int compute, int) {
    if (compute != 68) { fprintf(stderr, "EMU: compute type %d\n", compute); abort(); }
    float al = *(const float*)alpha, be = *(const float*)beta;
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            float s = 0.0f;
            for (int l = 0; l < k; ++l) {
                float av = ta == 0 ? ld(a, at, i + (size_t)l * lda) : ld(a, at, l + (size_t)i * lda);
                float bv = tb == 0 ? ld(b, bt, l + (size_t)j * ldb) : ld(b, bt, j + (size_t)l * ldb);
                s += av * bv;
            }
            size_t ci = i + (size_t)j * ldc;
            st(c, ct, ci, al * s + (be == 0.0f ? 0.0f : be * ld(c, ct, ci)));
        }
    return 0;
}
}
