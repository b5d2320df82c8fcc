// refdump: reference tokens and logits from llama.cpp (libllama), for Switchyard's golden files.
// Built and driven by scripts/gen-reference.sh. CPU only.
//   refdump MODEL tokenize STRINGS.bin         -> one line of ids per string
//   refdump MODEL greedy   STRINGS.bin N       -> per prompt: "ids...|tok:gap tok:gap ..."
//   refdump MODEL logits   TEXT.txt PROBES...  -> first line ids, then per position
//                                                 "id:logit x20 | probe logits"
//   refdump MODEL greedy-ids IDS.txt N         -> as greedy, prompts given as token ids (one
//                                                 prompt per line, ids separated by spaces)
//   refdump MODEL logits-ids IDS.txt PROBES... -> as logits, the text given as token ids
// STRINGS.bin: for each string a little-endian u32 byte length followed by the bytes.
#include "llama.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

static std::vector<std::string> read_strings(const char *path) {
    std::ifstream f(path, std::ios::binary);
    std::vector<std::string> out;
    uint32_t n;
    while (f.read(reinterpret_cast<char *>(&n), 4)) {
        std::string s(n, '\0');
        if (n) f.read(&s[0], n);
        out.push_back(s);
    }
    return out;
}

static std::vector<llama_token> tokenize(const llama_vocab *vocab, const std::string &s) {
    int n = -llama_tokenize(vocab, s.data(), (int32_t)s.size(), nullptr, 0, true, true);
    std::vector<llama_token> ids(std::max(n, 0));
    if (n > 0) llama_tokenize(vocab, s.data(), (int32_t)s.size(), ids.data(), n, true, true);
    return ids;
}

static std::vector<std::vector<llama_token>> read_id_lines(const char *path) {
    std::ifstream f(path);
    std::vector<std::vector<llama_token>> out;
    std::string line;
    while (std::getline(f, line)) {
        std::istringstream ss(line);
        std::vector<llama_token> ids;
        int id;
        while (ss >> id) ids.push_back(id);
        if (!ids.empty()) out.push_back(ids);
    }
    return out;
}

static llama_context *make_ctx(llama_model *model, int n) {
    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = std::max(n + 16, 256);
    cp.n_batch = cp.n_ctx;
    cp.n_ubatch = cp.n_ctx;
    cp.n_threads = 2;
    // llama.cpp's CPU flash attention accumulates V in f16, which moves Gemma 3 logits by up to ~1.0
    // (measured: FA on vs off at position 1 of long_text.txt). Its non-FA path accumulates in f32:
    // that is the reference we compare against. REFDUMP_FLASH_ATTN=1 restores the default.
    cp.flash_attn_type = getenv("REFDUMP_FLASH_ATTN") ? LLAMA_FLASH_ATTN_TYPE_AUTO : LLAMA_FLASH_ATTN_TYPE_DISABLED;
    cp.n_threads_batch = 2;
    // REFDUMP_KV_F32=1: an f32 KV cache (so q . k is not taken in f16): a second measure of
    // llama.cpp's own rounding noise.
    // REFDUMP_UBATCH=N: micro-batches of N tokens (llama.cpp picks other matmul kernels for
    // single tokens than for a batch): a third measure.
    if (getenv("REFDUMP_UBATCH")) {
        cp.n_ubatch = atoi(getenv("REFDUMP_UBATCH"));
    }
    if (getenv("REFDUMP_KV_F32")) {
        cp.type_k = GGML_TYPE_F32;
        cp.type_v = GGML_TYPE_F32;
    }
    return llama_init_from_model(model, cp);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: refdump MODEL tokenize|greedy|logits ARGS\n");
        return 2;
    }
    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = 0;
    llama_model *model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load %s\n", argv[1]); return 1; }
    const llama_vocab *vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);
    std::string mode = argv[2];

    if (mode == "tokenize") {
        for (const auto &s : read_strings(argv[3])) {
            auto ids = tokenize(vocab, s);
            for (size_t i = 0; i < ids.size(); i++) printf(i ? " %d" : "%d", ids[i]);
            printf("\n");
        }
    } else if (mode == "greedy" || mode == "greedy-ids") {
        int n_pred = argc > 4 ? atoi(argv[4]) : 64;
        std::vector<std::vector<llama_token>> prompts;
        if (mode == "greedy-ids") {
            prompts = read_id_lines(argv[3]);
        } else {
            for (const auto &s : read_strings(argv[3])) prompts.push_back(tokenize(vocab, s));
        }
        for (const auto &ids : prompts) {
            llama_context *ctx = make_ctx(model, (int)ids.size() + n_pred);
            for (size_t i = 0; i < ids.size(); i++) printf(i ? " %d" : "%d", ids[i]);
            printf("|");
            std::vector<llama_token> cur = ids;
            for (int step = 0; step < n_pred; step++) {
                if (llama_decode(ctx, llama_batch_get_one(cur.data(), (int32_t)cur.size()))) {
                    fprintf(stderr, "decode failed\n"); return 1;
                }
                const float *l = llama_get_logits_ith(ctx, -1);
                int best = 0;
                for (int i = 1; i < n_vocab; i++) if (l[i] > l[best]) best = i;
                float second = -INFINITY;
                for (int i = 0; i < n_vocab; i++) if (i != best && l[i] > second) second = l[i];
                printf(step ? " %d:%.6f" : "%d:%.6f", best, l[best] - second);
                cur.assign(1, best);
            }
            printf("\n");
            fflush(stdout);
            llama_free(ctx);
        }
    } else if (mode == "logits" || mode == "logits-ids") {
        std::vector<llama_token> ids;
        if (mode == "logits-ids") {
            auto lines = read_id_lines(argv[3]);
            if (lines.size() != 1) { fprintf(stderr, "logits-ids: one line of ids expected\n"); return 2; }
            ids = lines[0];
        } else {
            std::ifstream f(argv[3], std::ios::binary);
            std::stringstream ss;
            ss << f.rdbuf();
            ids = tokenize(vocab, ss.str());
        }
        std::vector<int> probes;
        for (int i = 4; i < argc; i++) probes.push_back(atoi(argv[i]));
        llama_context *ctx = make_ctx(model, (int)ids.size());
        llama_batch b = llama_batch_init((int32_t)ids.size(), 0, 1);
        for (size_t i = 0; i < ids.size(); i++) {
            b.token[i] = ids[i];
            b.pos[i] = (llama_pos)i;
            b.n_seq_id[i] = 1;
            b.seq_id[i][0] = 0;
            b.logits[i] = 1;
        }
        b.n_tokens = (int32_t)ids.size();
        if (llama_decode(ctx, b)) { fprintf(stderr, "decode failed\n"); return 1; }
        for (size_t i = 0; i < ids.size(); i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        std::vector<int> order(n_vocab);
        for (size_t p = 0; p < ids.size(); p++) {
            const float *l = llama_get_logits_ith(ctx, (int32_t)p);
            for (int i = 0; i < n_vocab; i++) order[i] = i;
            std::partial_sort(order.begin(), order.begin() + 20, order.end(),
                              [&](int a, int c) { return l[a] > l[c] || (l[a] == l[c] && a < c); });
            for (int k = 0; k < 20; k++) printf(k ? " %d:%.4f" : "%d:%.4f", order[k], l[order[k]]);
            printf(" |");
            for (int id : probes) printf(" %.4f", l[id]);
            printf("\n");
        }
        llama_batch_free(b);
        llama_free(ctx);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode.c_str());
        return 2;
    }
    llama_model_free(model);
    return 0;
}
