/* llama.cpp as the judge of ramfit's GGUF files: a small program linked with llama.cpp's own
 * libllama (built by scripts/llamacpp.sh; never part of ramfit's build) that loads a GGUF and
 *   tokenize MODEL.gguf FILE               prints the ids of FILE's text, space-separated (no BOS,
 *                                          special-token strings parsed as such, as Hugging Face)
 *   ppl MODEL.gguf FILE CTX full|llama.cpp [MAX_TOKENS]
 *                                          perplexity under ramfit's protocols (ramfit.h: the text
 *                                          tokenized once without BOS, windows of CTX, the same
 *                                          scored positions), printed as "ppl P nll N tokens T"
 *   generate MODEL.gguf PROMPT N           greedy continuation: "ids ..." then the text
 *   logits MODEL.gguf FILE CTX             the logits of the last position of the first window
 *                                          (full protocol), one per line, for direct comparison
 *   logits-ids MODEL.gguf ID...            the logits of every position of the ids run as one
 *                                          sequence: one line of vocab values per position
 *   tokenize-many MODEL.gguf FILE SPECIAL  FILE holds texts as "<bytes>\n<text>" records: one line of
 *                                          ids per text (vocabulary only; SPECIAL 1: with BOS/EOS)
 * Built by tests/llamacpp/build.sh against the cached llama.cpp build. */
#include "llama.h"

#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet_log(enum ggml_log_level level, const char *text, void *user)
{
    (void)user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 20, len = 0, r;
    char *p = malloc(cap + 1);
    while (p && (r = fread(p + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap) {
            char *q = realloc(p, (cap *= 2) + 1);
            if (!q) { free(p); p = NULL; }
            p = q;
        }
    }
    fclose(f);
    if (p) p[len] = '\0';
    *n = len;
    return p;
}

typedef struct run {
    struct llama_model *model;
    const struct llama_vocab *vocab;
    struct llama_context *ctx;
    int n_vocab;
} run;

static bool no_progress(float p, void *user)
{
    (void)p, (void)user;
    return true;
}

static int open_model(const char *path, int n_ctx, run *r)
{
    llama_log_set(quiet_log, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    mp.vocab_only = n_ctx < 0; /* tokenizer-only files */
    mp.progress_callback = no_progress; /* the default prints dots to stderr */
    r->model = llama_model_load_from_file(path, mp);
    if (!r->model) {
        fprintf(stderr, "harness: llama.cpp cannot load %s\n", path);
        return 1;
    }
    r->vocab = llama_model_get_vocab(r->model);
    r->n_vocab = llama_vocab_n_tokens(r->vocab);
    if (n_ctx > 0) { /* 0: vocabulary and weights, -1: vocabulary only; no context either way */
        struct llama_context_params cp = llama_context_default_params();
        cp.n_ctx = (uint32_t)n_ctx;
        cp.n_batch = (uint32_t)n_ctx;
        cp.n_ubatch = (uint32_t)n_ctx;
        cp.n_threads = cp.n_threads_batch = 2;
        r->ctx = llama_init_from_model(r->model, cp);
        if (!r->ctx) {
            fprintf(stderr, "harness: cannot create a llama.cpp context for %s\n", path);
            return 1;
        }
    }
    return 0;
}

static void close_model(run *r)
{
    if (r->ctx) llama_free(r->ctx);
    if (r->model) llama_model_free(r->model);
    llama_backend_free();
}

static llama_token *tokenize(const run *r, const char *text, size_t len, int add_special, int *n)
{
    int cap = (int)len + 16;
    llama_token *ids = malloc(sizeof *ids * (size_t)cap);
    *n = llama_tokenize(r->vocab, text, (int32_t)len, ids, cap, add_special, 1);
    if (*n < 0) {
        cap = -*n;
        ids = realloc(ids, sizeof *ids * (size_t)cap);
        *n = llama_tokenize(r->vocab, text, (int32_t)len, ids, cap, add_special, 1);
    }
    return ids;
}

/* Run tokens [0, len) of WIN from position 0 with logits for every position. */
static const float *eval_window(run *r, const llama_token *win, int len)
{
    llama_memory_clear(llama_get_memory(r->ctx), 1);
    struct llama_batch b = llama_batch_init(len, 0, 1);
    for (int i = 0; i < len; i++) {
        b.token[i] = win[i];
        b.pos[i] = i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 1;
    }
    b.n_tokens = len;
    int rc = llama_decode(r->ctx, b);
    llama_batch_free(b);
    if (rc) {
        fprintf(stderr, "harness: llama_decode failed (%d)\n", rc);
        return NULL;
    }
    return llama_get_logits_ith(r->ctx, 0);
}

static double nll_of(const float *lg, int V, int target)
{
    double mx = lg[0];
    for (int v = 1; v < V; v++) mx = lg[v] > mx ? lg[v] : mx;
    double s = 0;
    for (int v = 0; v < V; v++) s += exp(lg[v] - mx);
    return log(s) + mx - lg[target];
}

static int cmd_ppl(const char *model, const char *file, int ctx, const char *protocol, long max_tokens)
{
    run r = {0};
    size_t len;
    char *text = read_file(file, &len);
    if (!text) {
        fprintf(stderr, "harness: cannot read %s\n", file);
        return 1;
    }
    if (open_model(model, ctx, &r)) return 1;
    int n;
    llama_token *ids = tokenize(&r, text, len, 0, &n);
    free(text);
    if (max_tokens > 0 && n > max_tokens) n = (int)max_tokens;
    int bos = llama_vocab_get_add_bos(r.vocab) ? llama_vocab_bos(r.vocab) : -1;
    int full = !strcmp(protocol, "full");
    int stride = full ? (bos >= 0 ? ctx - 1 : ctx) : ctx, first = full ? 0 : ctx / 2;
    int lead = !full && bos >= 0;
    long nwin = ((long)n + lead) / stride;
    llama_token *win = malloc(sizeof *win * (size_t)ctx);
    double sum = 0;
    long count = 0;
    for (long w = 0; w < nwin; w++) {
        if (full) {
            int off = bos >= 0;
            if (off) win[0] = bos;
            memcpy(win + off, ids + w * stride, sizeof *win * (size_t)(ctx - off));
        } else {
            for (int j = 0; j < ctx; j++) {
                long i = w * stride + j;
                win[j] = lead ? (i == 0 ? bos : ids[i - 1]) : ids[i];
            }
            if (bos >= 0) win[0] = bos;
        }
        const float *lg = eval_window(&r, win, ctx);
        if (!lg) return 1;
        for (int j = first; j < ctx - 1; j++) {
            sum += nll_of(llama_get_logits_ith(r.ctx, j), r.n_vocab, win[j + 1]);
            count++;
        }
    }
    double nll = count ? sum / (double)count : 0;
    printf("ppl %.6f nll %.8f tokens %ld windows %ld\n", exp(nll), nll, count, nwin);
    free(win);
    free(ids);
    close_model(&r);
    return 0;
}

static int cmd_tokenize(const char *model, const char *file)
{
    run r = {0};
    size_t len;
    char *text = read_file(file, &len);
    if (!text) {
        fprintf(stderr, "harness: cannot read %s\n", file);
        return 1;
    }
    if (open_model(model, 0, &r)) return 1;
    int n;
    llama_token *ids = tokenize(&r, text, len, 0, &n);
    for (int i = 0; i < n; i++) printf(i ? " %d" : "%d", ids[i]);
    printf("\n");
    free(ids);
    free(text);
    close_model(&r);
    return n < 0;
}

static int cmd_generate(const char *model, const char *prompt, int steps)
{
    run r = {0};
    if (open_model(model, 512, &r)) return 1;
    int n;
    llama_token *ids = tokenize(&r, prompt, strlen(prompt), 1, &n);
    ids = realloc(ids, sizeof *ids * (size_t)(n + steps + 1));
    printf("ids");
    for (int s = 0; s < steps && n < 500; s++) {
        const float *lg = eval_window(&r, ids, n);
        if (!lg) return 1;
        lg = llama_get_logits_ith(r.ctx, n - 1);
        int best = 0;
        for (int v = 1; v < r.n_vocab; v++)
            if (lg[v] > lg[best]) best = v;
        ids[n++] = best;
        printf(" %d", best);
        if (llama_vocab_is_eog(r.vocab, best)) break;
    }
    printf("\n");
    char piece[256];
    for (int i = 0; i < n; i++) {
        int k = llama_token_to_piece(r.vocab, ids[i], piece, sizeof piece, 0, 0);
        if (k > 0) fwrite(piece, 1, (size_t)k, stdout);
    }
    printf("\n");
    free(ids);
    close_model(&r);
    return 0;
}

static int cmd_logits(const char *model, const char *file, int ctx)
{
    run r = {0};
    size_t len;
    char *text = read_file(file, &len);
    if (!text || open_model(model, ctx, &r)) return 1;
    int n;
    llama_token *ids = tokenize(&r, text, len, 1, &n);
    if (n > ctx) n = ctx;
    if (!eval_window(&r, ids, n)) return 1;
    const float *lg = llama_get_logits_ith(r.ctx, n - 1);
    for (int v = 0; v < r.n_vocab; v++) printf("%.7g\n", lg[v]);
    free(ids);
    free(text);
    close_model(&r);
    return 0;
}

static int cmd_logits_ids(const char *model, int n, char **ids_text)
{
    run r = {0};
    if (open_model(model, n < 16 ? 16 : n, &r)) return 1;
    llama_token *ids = malloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++) ids[i] = atoi(ids_text[i]);
    if (!eval_window(&r, ids, n)) return 1;
    for (int i = 0; i < n; i++) {
        const float *lg = llama_get_logits_ith(r.ctx, i);
        for (int v = 0; v < r.n_vocab; v++) printf(v ? " %.7g" : "%.7g", lg[v]);
        printf("\n");
    }
    free(ids);
    close_model(&r);
    return 0;
}

static int cmd_tokenize_many(const char *model, const char *file, int special)
{
    run r = {0};
    size_t len;
    char *data = read_file(file, &len);
    if (!data || open_model(model, -1, &r)) return 1;
    for (size_t p = 0; p < len;) {
        char *end;
        long n = strtol(data + p, &end, 10);
        if (*end != '\n' || n < 0 || (size_t)n > len - (size_t)(end + 1 - data)) break;
        int k;
        llama_token *ids = tokenize(&r, end + 1, (size_t)n, special, &k);
        for (int i = 0; i < k; i++) printf(i ? " %d" : "%d", ids[i]);
        printf("\n");
        free(ids);
        p = (size_t)(end + 1 - data) + (size_t)n;
    }
    free(data);
    close_model(&r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 4 && !strcmp(argv[1], "tokenize")) return cmd_tokenize(argv[2], argv[3]);
    if (argc >= 6 && !strcmp(argv[1], "ppl"))
        return cmd_ppl(argv[2], argv[3], atoi(argv[4]), argv[5], argc > 6 ? atol(argv[6]) : 0);
    if (argc >= 5 && !strcmp(argv[1], "generate")) return cmd_generate(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "logits")) return cmd_logits(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 5 && !strcmp(argv[1], "tokenize-many")) return cmd_tokenize_many(argv[2], argv[3], atoi(argv[4]));
    if (argc >= 4 && !strcmp(argv[1], "logits-ids")) return cmd_logits_ids(argv[2], argc - 3, argv + 3);
    fprintf(stderr, "usage: harness tokenize MODEL.gguf FILE | ppl MODEL.gguf FILE CTX full|llama.cpp [MAX_TOKENS] |\n"
                    "               generate MODEL.gguf PROMPT N | logits MODEL.gguf FILE CTX |\n"
                    "               logits-ids MODEL.gguf ID...\n");
    return 2;
}
