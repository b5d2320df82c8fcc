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
// `sig`: one character per parameter, its size in bytes ('p' = pointer), so that a stream capture
// can copy the argument values as the real driver does.
struct KernelEntry { const char* name; void (*call)(void**); const char* sig; };
static KernelEntry kernels[] = {
    {"embed_rows", [](void** p) { embed_rows(A(0, const u16*), A(1, const u32*), A(2, float*), A(3, int), A(4, u32), A(5, float), A(6, u64)); }, "ppp4448"},
    {"rmsnorm_f32", [](void** p) { rmsnorm_f32(A(0, const float*), A(1, const u32*), A(2, u32), A(3, const float*), A(4, float*), A(5, int), A(6, float)); }, "pp4pp44"},
    {"rmsnorm_bf16", [](void** p) { rmsnorm_bf16(A(0, const float*), A(1, const u32*), A(2, u32), A(3, const float*), A(4, bf16*), A(5, int), A(6, float)); }, "pp4pp44"},
    {"residual_rmsnorm", [](void** p) { residual_rmsnorm(A(0, float*), A(1, const float*), A(2, const float*), A(3, const float*), A(4, bf16*), A(5, int), A(6, float)); }, "ppppp44"},
    {"add_bias", [](void** p) { add_bias(A(0, float*), A(1, const float*), A(2, int), A(3, u64)); }, "pp48"},
    {"head_norm_rope", [](void** p) { head_norm_rope(A(0, float*), A(1, int), A(2, int), A(3, int), A(4, const float*), A(5, const float*), A(6, float), A(7, const u32*), A(8, const float*), A(9, int), A(10, float)); }, "p444pp4pp44"},
    {"kv_write", [](void** p) { kv_write(A(0, const float*), A(1, int), A(2, int), A(3, int), A(4, int), A(5, const u32*), A(6, u32), A(7, u16*), A(8, u16*), A(9, u64)); }, "p4444p4pp8"},
    {"copy_blocks", [](void** p) { copy_blocks(A(0, u16*), A(1, const u32*), A(2, u32), A(3, u64)); }, "pp48"},
    {"attention_f32", [](void** p) { attention_f32(A(0, const float*), A(1, int), A(2, const u16*), A(3, const u16*), A(4, float*), A(5, int), A(6, const u32*), A(7, const u32*), A(8, const u32*), A(9, const u32*), A(10, u32), A(11, u32), A(12, u32), A(13, int), A(14, int), A(15, int), A(16, int), A(17, int)); }, "p4ppp4pppp44444444"},
    {"attention_bf16", [](void** p) { attention_bf16(A(0, const float*), A(1, int), A(2, const u16*), A(3, const u16*), A(4, bf16*), A(5, int), A(6, const u32*), A(7, const u32*), A(8, const u32*), A(9, const u32*), A(10, u32), A(11, u32), A(12, u32), A(13, int), A(14, int), A(15, int), A(16, int), A(17, int)); }, "p4ppp4pppp44444444"},
    {"act_mul_f32", [](void** p) { act_mul_f32(A(0, const float*), A(1, float*), A(2, int), A(3, int), A(4, u64)); }, "pp448"},
    {"act_mul_bf16", [](void** p) { act_mul_bf16(A(0, const float*), A(1, bf16*), A(2, int), A(3, int), A(4, u64)); }, "pp448"},
    {"softcap", [](void** p) { softcap(A(0, float*), A(1, float), A(2, u64)); }, "p48"},
    {"argmax_rows", [](void** p) { argmax_rows(A(0, const float*), A(1, int), A(2, u32*)); }, "p4p"},
};

// ---------------------------------------------------------------- stream capture / graphs
// One capture at a time (the backend uses one stream). While capturing, kernel launches and GEMMs
// are recorded instead of run; anything that would allocate, copy, set memory or wait for the
// device fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED and invalidates the capture, as the
// real driver does for those calls, so the emulator catches a non-capturable step.
struct GemmCall {
    int ta, tb, m, n, k; float alpha, beta; const void* a; int at, lda; const void* b; int bt, ldb;
    void* c; int ct, ldc, compute;
};
struct Node {
    bool is_gemm;
    KernelEntry* k; emu_uint3 grid, block; unsigned smem; std::vector<u64> args;
    GemmCall g;
};
struct Graph { std::vector<Node> nodes; };
static Graph* capturing = nullptr;
static bool capture_invalid = false;
static const int ERR_CAPTURE_UNSUPPORTED = 900, ERR_CAPTURE_INVALIDATED = 901;
static size_t graph_replays = 0;
// Returns nonzero (and invalidates the capture) when called during a capture.
static int forbid_in_capture(const char* what) {
    if (!capturing) return 0;
    fprintf(stderr, "EMU: %s during stream capture (not capturable)\n", what);
    capture_invalid = true;
    return ERR_CAPTURE_UNSUPPORTED;
}
#define FORBID(what) do { if (int e_ = forbid_in_capture(what)) return e_; } while (0)
static void run_gemm(const GemmCall& g);

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
CUresult cuCtxSynchronize() { FORBID("cuCtxSynchronize"); return 0; }
CUresult cuStreamCreate(void** s, unsigned) { *s = malloc(8); return 0; }
CUresult cuStreamDestroy_v2(void* s) { free(s); return 0; }
CUresult cuStreamSynchronize(void*) { FORBID("cuStreamSynchronize"); return 0; }
CUresult cuStreamWaitEvent(void*, void*, unsigned) { return 0; }
CUresult cuEventCreate(void** e, unsigned) { *e = malloc(8); return 0; }
CUresult cuEventRecord(void*, void*) { return 0; }
CUresult cuEventSynchronize(void*) { FORBID("cuEventSynchronize"); return 0; }
CUresult cuEventElapsedTime(float* ms, void*, void*) { *ms = 0.0f; return 0; }
CUresult cuEventElapsedTime_v2(float* ms, void*, void*) { *ms = 0.0f; return 0; }
CUresult cuEventQuery(void*) { return 0; }
CUresult cuMemHostAlloc(void** p, size_t n, unsigned) { FORBID("cuMemHostAlloc"); *p = malloc(n ? n : 1); return 0; }
CUresult cuMemFreeHost(void* p) { free(p); return 0; }
CUresult cuStreamBeginCapture_v2(void*, int) {
    if (capturing) return ERR_CAPTURE_UNSUPPORTED;
    capturing = new Graph();
    capture_invalid = false;
    return 0;
}
CUresult cuStreamEndCapture(void*, void** graph) {
    if (!capturing) { *graph = nullptr; return 906; /* CUDA_ERROR_STREAM_CAPTURE_UNMATCHED */ }
    Graph* g = capturing;
    capturing = nullptr;
    if (capture_invalid) { delete g; *graph = nullptr; return ERR_CAPTURE_INVALIDATED; }
    *graph = g;
    return 0;
}
CUresult cuStreamIsCapturing(void*, int* status) { *status = capturing ? (capture_invalid ? 2 : 1) : 0; return 0; }
CUresult cuGraphInstantiateWithFlags(void** exec, void* graph, unsigned long long) {
    *exec = new Graph(*(Graph*)graph);
    return 0;
}
CUresult cuGraphLaunch(void* exec, void*) {
    FORBID("cuGraphLaunch");
    for (const Node& nd : ((Graph*)exec)->nodes) {
        if (nd.is_gemm) { run_gemm(nd.g); continue; }
        std::vector<void*> params(nd.args.size());
        std::vector<u64> vals = nd.args;
        for (size_t i = 0; i < vals.size(); ++i) params[i] = &vals[i];
        emu_launch(nd.k->call, params.data(), nd.grid, nd.block, nd.smem);
    }
    ++graph_replays;
    return 0;
}
CUresult cuGraphUpload(void*, void*) { return 0; }
CUresult cuGraphDestroy(void* g) { delete (Graph*)g; return 0; }
CUresult cuGraphExecDestroy(void* g) { delete (Graph*)g; return 0; }
CUresult cuEventDestroy_v2(void* e) { free(e); return 0; }
CUresult cuMemAlloc_v2(u64* p, size_t n) { FORBID("cuMemAlloc_v2");
    void* m = malloc(n ? n : 1);
    memset(m, 0xFF, n);  // poison: uninitialized floats read as NaN
    *p = (u64)m;
    live_bytes += n;
    return 0;
}
CUresult cuMemFree_v2(u64 p) { FORBID("cuMemFree_v2"); free((void*)p); return 0; }
CUresult cuMemAllocAsync(u64* p, size_t n, void*) { return cuMemAlloc_v2(p, n); }
CUresult cuMemFreeAsync(u64 p, void*) { return cuMemFree_v2(p); }
CUresult cuMemsetD8Async(u64 p, unsigned char v, size_t n, void*) { FORBID("cuMemsetD8Async"); memset((void*)p, v, n); return 0; }
CUresult cuMemsetD8_v2(u64 p, unsigned char v, size_t n) { FORBID("cuMemsetD8_v2"); memset((void*)p, v, n); return 0; }
CUresult cuMemcpyHtoDAsync_v2(u64 d, const void* s, size_t n, void*) { FORBID("cuMemcpyHtoDAsync_v2"); memcpy((void*)d, s, n); return 0; }
CUresult cuMemcpyDtoHAsync_v2(void* d, u64 s, size_t n, void*) { FORBID("cuMemcpyDtoHAsync_v2"); memcpy(d, (void*)s, n); return 0; }
CUresult cuMemcpyDtoDAsync_v2(u64 d, u64 s, size_t n, void*) { FORBID("cuMemcpyDtoDAsync_v2"); memmove((void*)d, (void*)s, n); return 0; }
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
    if (capturing) {
        Node nd{};
        nd.is_gemm = false;
        nd.k = (KernelEntry*)f; nd.grid = {gx, gy, gz}; nd.block = {bx, by, bz}; nd.smem = smem;
        const char* sig = nd.k->sig;
        for (size_t i = 0; sig[i]; ++i) {
            u64 v = 0;
            memcpy(&v, params[i], sig[i] == '4' ? 4 : 8);
            nd.args.push_back(v);
        }
        capturing->nodes.push_back(std::move(nd));
        return 0;
    }
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
int cublasSetWorkspace_v2(void*, void*, size_t) { return 0; }
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
    GemmCall g{ta, tb, m, n, k, *(const float*)alpha, *(const float*)beta, a, at, lda, b, bt, ldb, c, ct, ldc, compute};
    if (capturing) {
        Node nd{};
        nd.is_gemm = true;
        nd.g = g;
        capturing->nodes.push_back(std::move(nd));
        return 0;
    }
    run_gemm(g);
    return 0;
}
}
static void run_gemm(const GemmCall& g) {
    int ta = g.ta, tb = g.tb, m = g.m, n = g.n, k = g.k, at = g.at, lda = g.lda, bt = g.bt, ldb = g.ldb;
    int ct = g.ct, ldc = g.ldc;
    const void *a = g.a, *b = g.b;
    void* c = g.c;
    float al = g.alpha, be = g.beta;
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
}
