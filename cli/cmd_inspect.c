/* ramfit inspect: what a checkpoint holds, from its headers and config.json only (no data read).
 * JSON keys are documented in docs/inspect.md. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit inspect MODEL_DIR [--json] [--verbose]\n"
    "       ramfit inspect FILE.gguf [--json] [--verbose]\n"
    "\n"
    "Summarise a Hugging Face checkpoint (config.json + safetensors shards): architecture,\n"
    "exact parameter count, bytes by dtype and by role, tensors and quantization units.\n"
    "Reads only headers; no tensor data. A GGUF file (ramfit's or llama.cpp's): architecture,\n"
    "metadata, tokenizer, tensors and bytes by type.\n"
    "\n"
    "  --json       one JSON object on stdout (keys: docs/inspect.md)\n"
    "  --verbose    also list every tensor (name, dtype, shape, role, layer, expert, unit)\n"
    "               and every quantization unit\n";

/* 1234567 -> "1,234,567" */
static const char *commas(uint64_t v, char *buf, size_t cap)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v), o = 0;
    for (int i = 0; i < n && (size_t)o + 2 < cap; i++) {
        if (i && (n - i) % 3 == 0) buf[o++] = ',';
        buf[o++] = tmp[i];
    }
    buf[o] = '\0';
    return buf;
}

static void shape_text(const rf_tensor *t, char *buf, size_t cap)
{
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < t->ndim && o < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%llu", d ? ", " : "", (unsigned long long)t->shape[d]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

typedef struct tally { uint64_t tensors, params, bytes; } tally;

typedef struct summary {
    tally by_dtype[RF_DT_COUNT], by_role[RF_ROLE_COUNT], total;
    uint64_t quantizable_units, file_bytes;
    uint64_t mlx_quantized;     /* modules stored MLX-quantized (0 for an original checkpoint) */
} summary;

/* Logical weights of tensor T: a packed MLX weight holds 32/bits of them per U32 word. */
static uint64_t logical_params(const rf_tinfo *ti, const rf_mlx_quant *q)
{
    if (ti->quant_aux || ti->fp8_scale) return 0; /* companions, not weights */
    for (uint64_t k = 0; q && ti->t->dtype == RF_DT_U32 && k < rf_mlx_quant_count(q); k++) {
        const rf_mlx_module *mm = rf_mlx_quant_module(q, k);
        size_t n = strlen(mm->name);
        if (mm->bits && !strncmp(ti->t->name, mm->name, n) && !strcmp(ti->t->name + n, ".weight")) return mm->params;
    }
    return ti->t->nelem;
}

static int is_mlx_quantized(const rf_model *m);

static rf_status summarise(const rf_model *m, summary *s, rf_err *err)
{
    memset(s, 0, sizeof *s);
    rf_mlx_quant *q = NULL;
    if (is_mlx_quantized(m)) {
        rf_status st = rf_mlx_quant_read(rf_model_dir(m), &q, err);
        if (st) return st;
        for (uint64_t k = 0; k < rf_mlx_quant_count(q); k++) s->mlx_quantized += rf_mlx_quant_module(q, k)->bits != 0;
    }
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        uint64_t params = logical_params(ti, q);
        tally *ts[3] = {&s->by_dtype[ti->t->dtype], &s->by_role[ti->role], &s->total};
        for (int k = 0; k < 3; k++) ts[k]->tensors++, ts[k]->params += params, ts[k]->bytes += ti->t->nbytes;
    }
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) s->quantizable_units += rf_model_unit(m, u)->quantizable != 0;
    const rf_st *st = rf_model_st(m);
    for (uint64_t f = 0; f < rf_st_file_count(st); f++) s->file_bytes += rf_st_file_size(st, f);
    rf_mlx_quant_free(q);
    return RF_OK;
}

static const char *dtype_word(rf_dtype dt) { return dt == RF_DT_INVALID ? "unknown" : rf_dtype_name(dt); }

/* ------------------------------------------------------------------ text */

static void print_rope1(const char *label, const rf_rope *r)
{
    printf("%s theta %.10g", label, r->theta);
    if (!strcmp(r->type, "llama3"))
        printf(", llama3 scaling (factor %g, low_freq %g, high_freq %g, original max pos %d)", r->factor,
               r->low_freq_factor, r->high_freq_factor, r->original_max_pos);
    else if (!strcmp(r->type, "yarn"))
        printf(", yarn scaling (factor %g, original max pos %d, mscale %g / %g)", r->factor, r->original_max_pos, r->mscale,
               r->mscale_all_dim);
    else if (!strcmp(r->type, "longrope"))
        printf(", longrope (%d factor pairs, original max pos %d)", r->n_factors, r->original_max_pos);
    else if (r->type[0])
        printf(", %s scaling (factor %g)", r->type, r->factor);
}

static int count_layers(const rf_config *c, unsigned flag)
{
    int n = 0;
    for (int l = 0; l < c->num_layers; l++) n += (rf_config_layer_flags(c, l) & flag) != 0;
    return n;
}

static void print_rope(const rf_config *c)
{
    print_rope1("rope          ", &c->rope);
    if (c->partial_rotary < 1) printf(", %g of each head rotated", c->partial_rotary);
    if (c->rope_interleaved) printf(", adjacent pairs");
    printf("\n");
    if (count_layers(c, RF_LAYER_LOCAL)) {
        print_rope1("local rope    ", &c->rope_local);
        printf(" (%d sliding layers)\n", count_layers(c, RF_LAYER_LOCAL));
    }
}

static void print_attention(const rf_config *c)
{
    printf("attention     ");
    if (c->kv_lora_rank)
        printf(" multi-head latent (kv_lora %d, q_lora %d, head %d+%d rope, v %d)", c->kv_lora_rank, c->q_lora_rank,
               c->qk_nope_head_dim, c->qk_rope_head_dim, c->v_head_dim);
    else
        printf(" grouped-query");
    if (c->qk_norm == RF_QKNORM_RMS) printf(", q/k RMSNorm");
    if (c->qk_norm == RF_QKNORM_L2) printf(", q/k L2 norm");
    int sl = count_layers(c, RF_LAYER_SLIDING), ch = count_layers(c, RF_LAYER_CHUNKED), np = count_layers(c, RF_LAYER_NOPE);
    if (sl) printf(", sliding window %d on %d layers", c->sliding_window, sl);
    if (ch) printf(", chunks of %d on %d layers", c->attention_chunk, ch);
    if (np) printf(", %d NoPE layers%s", np, c->temp_tuning ? " (temperature tuning)" : "");
    if (c->attn_softcap > 0) printf(", softcap %g", c->attn_softcap);
    printf("\n");
}

static void print_table(const char *head, const tally *rows, int nrows, const char *(*label)(int), uint64_t total)
{
    char a[32], b[32];
    printf("\n%-12s %8s %16s %18s %7s\n", head, "tensors", "params", "bytes", "share");
    for (int r = 0; r < nrows; r++) {
        if (!rows[r].tensors) continue;
        printf("%-12s %8llu %16s %18s %6.2f%%\n", label(r), (unsigned long long)rows[r].tensors,
               commas(rows[r].params, a, sizeof a), commas(rows[r].bytes, b, sizeof b),
               total ? 100.0 * (double)rows[r].bytes / (double)total : 0.0);
    }
}

static const char *dtype_label(int i) { return rf_dtype_name((rf_dtype)i); }
static const char *role_label(int i) { return rf_role_name((rf_role)i); }

static void print_verbose(const rf_model *m)
{
    printf("\n%-56s %-5s %-20s %-12s %5s %6s %5s\n", "tensor", "dtype", "shape", "role", "layer", "expert", "unit");
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        char shp[96];
        shape_text(ti->t, shp, sizeof shp);
        printf("%-56s %-5s %-20s %-12s %5d %6d %5d%s\n", ti->t->name, rf_dtype_name(ti->t->dtype), shp,
               rf_role_name(ti->role), ti->layer, ti->expert, ti->unit, ti->quant_aux ? " (quantized companion)" : "");
    }
    printf("\n%5s %-48s %-12s %5s %8s %8s %7s %12s %s\n", "unit", "name", "role", "layer", "rows", "cols", "experts",
           "params", "quantizable");
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        char p[32];
        printf("%5llu %-48s %-12s %5d %8llu %8llu %7d %12s %s\n", (unsigned long long)u, un->name,
               rf_role_name(un->role), un->layer, (unsigned long long)un->rows, (unsigned long long)un->cols,
               un->n_experts, commas(un->nparams, p, sizeof p), un->quantizable ? "yes" : "no");
    }
}

static void print_text(const rf_model *m, const summary *s, int verbose)
{
    const rf_config *c = rf_model_config(m);
    const rf_st *st = rf_model_st(m);
    char a[32], b[32], sz[64];
    printf("model          %s\n", rf_model_dir(m));
    printf("architecture   %s%s%s%s\n", c->model_type, c->architecture[0] ? " (" : "", c->architecture,
           c->architecture[0] ? ")" : "");
    printf("layers         %d\n", c->num_layers);
    printf("hidden         %d\n", c->hidden_size);
    printf("heads          %d (kv heads %d, head_dim %d)%s\n", c->num_heads, c->num_kv_heads, c->head_dim,
           c->attention_bias ? ", q/k/v bias" : "");
    printf("ffn            %d (%s%s)\n", c->intermediate_size, rf_act_name(c->act), c->mlp_bias ? ", biases" : "");
    printf("vocab          %d\n", c->vocab_size);
    printf("embeddings     %s\n", c->tie_word_embeddings ? "tied (no lm_head)" : "untied (separate lm_head)");
    if (!rf_config_runnable(c))
        printf("family         unknown ('%s'): inspect, analyse, plan and quantize work on its Linear/Embedding weights "
               "by name; ppl, kld and generate need a supported family\n", c->model_type);
    else {
        print_attention(c);
        print_rope(c);
    }
    if (c->num_experts) {
        static const char *const routers[] = {"softmax over the top-k", "softmax, top-k", "sigmoid, group-limited top-k",
                                              "top-k, sigmoid on the input"};
        int moe_layers = 0;
        for (int l = 0; l < c->num_layers; l++) moe_layers += rf_config_layer_is_moe(c, l);
        printf("moe            %d experts, top-%d (%s)%s, expert ffn %d, %d of %d layers", c->num_experts,
               c->experts_per_tok, c->router >= 0 && c->router < 4 ? routers[c->router] : "?",
               c->norm_topk_prob ? " (renormalised)" : "", c->moe_intermediate_size, moe_layers, c->num_layers);
        if (c->shared_intermediate) printf(", shared expert ffn %d%s", c->shared_intermediate, c->shared_gate ? " (gated)" : "");
        if (c->n_group > 1) printf(", %d of %d groups", c->topk_group, c->n_group);
        printf("\n");
    }
    if (c->fp8_block[0]) printf("weights        FP8 (e4m3) with %dx%d block scales: read dequantized\n", c->fp8_block[0], c->fp8_block[1]);
    if (c->extra_layers) printf("extra layers   %d multi-token-prediction layer(s) past the model: not part of it\n", c->extra_layers);
    printf("config dtype   %s\n", dtype_word(c->torch_dtype));
    printf("parameters     %s\n", commas(s->total.params, a, sizeof a));
    printf("tensors        %llu\n", (unsigned long long)rf_model_tensor_count(m));
    if (s->mlx_quantized)
        printf("units          %llu quantization units (%llu stored MLX-quantized)\n",
               (unsigned long long)rf_model_unit_count(m), (unsigned long long)s->mlx_quantized);
    else
        printf("units          %llu quantization units (%llu quantizable)\n", (unsigned long long)rf_model_unit_count(m),
               (unsigned long long)s->quantizable_units);
    rf_format_size(s->total.bytes, sz, sizeof sz);
    printf("tensor bytes   %s (%s)\n", commas(s->total.bytes, b, sizeof b), sz);
    rf_format_size(s->file_bytes, sz, sizeof sz);
    printf("files          %llu shard%s, %s bytes (%s)\n", (unsigned long long)rf_st_file_count(st),
           rf_st_file_count(st) == 1 ? "" : "s", commas(s->file_bytes, a, sizeof a), sz);
    print_table("dtype", s->by_dtype, RF_DT_COUNT, dtype_label, s->total.bytes);
    print_table("role", s->by_role, RF_ROLE_COUNT, role_label, s->total.bytes);
    if (verbose) print_verbose(m);
}

/* ------------------------------------------------------------------ MLX-quantized checkpoints */

static int is_mlx_quantized(const rf_model *m)
{
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++)
        if (rf_model_tinfo(m, i)->quant_aux) return 1;
    return 0;
}

/* Per config (bits/gs, keep = 0/0): modules, logical parameters and bytes, as mlx-lm loads them. */
static int mlx_section(const rf_model *m, int verbose, json_t *root)
{
    rf_err err;
    rf_mlx_quant *q = NULL;
    if (rf_mlx_quant_read(rf_model_dir(m), &q, &err)) return cli_fail(&err);
    int db, dg;
    rf_mlx_quant_default(q, &db, &dg);
    struct { int bits, gs; uint64_t n, params, bytes; } cfg[32];
    int nc = 0;
    uint64_t params = 0, bytes = 0;
    json_t *mods = json_array();
    for (uint64_t i = 0; i < rf_mlx_quant_count(q); i++) {
        const rf_mlx_module *mm = rf_mlx_quant_module(q, i);
        int k = 0;
        while (k < nc && (cfg[k].bits != mm->bits || cfg[k].gs != mm->gs)) k++;
        if (k == nc && nc < 32) {
            cfg[nc].bits = mm->bits, cfg[nc].gs = mm->gs, cfg[nc].n = cfg[nc].params = cfg[nc].bytes = 0;
            nc++;
        }
        if (k < nc) cfg[k].n++, cfg[k].params += mm->params, cfg[k].bytes += mm->bytes;
        params += mm->params;
        bytes += mm->bytes;
        json_array_append_new(mods, json_pack("{s:s, s:i, s:i, s:I, s:I, s:s}", "module", mm->name, "bits", mm->bits,
                                              "group_size", mm->gs, "params", (json_int_t)mm->params, "bytes",
                                              (json_int_t)mm->bytes, "dtype", rf_dtype_name(mm->dtype)));
    }
    if (root) {
        json_object_set_new(root, "mlx_quantization", json_pack("{s:i, s:i, s:I, s:I, s:o}", "bits", db, "group_size", dg,
                                                                "params", (json_int_t)params, "bytes", (json_int_t)bytes,
                                                                "modules", mods));
    } else {
        json_decref(mods);
        /* db 0: the global setting is not an affine config ramfit reads (mode mxfp4, ...): every
         * quantized module has its own entry, else reading the checkpoint failed above */
        if (db) printf("\nMLX quantization (default %d bits, group size %d; modules resolved as mlx-lm loads them)\n", db, dg);
        else printf("\nMLX quantization (global setting unused: not an affine config; modules resolved as mlx-lm loads them)\n");
        printf("%-10s %8s %16s %16s %7s\n", "config", "modules", "params", "bytes", "bpw");
        for (int k = 0; k < nc; k++) {
            char c[24];
            if (cfg[k].bits) snprintf(c, sizeof c, "%d/%d", cfg[k].bits, cfg[k].gs);
            else snprintf(c, sizeof c, "kept");
            printf("%-10s %8llu %16llu %16llu %7.3f\n", c, (unsigned long long)cfg[k].n, (unsigned long long)cfg[k].params,
                   (unsigned long long)cfg[k].bytes, cfg[k].params ? 8.0 * (double)cfg[k].bytes / (double)cfg[k].params : 0);
        }
        printf("%-10s %8llu %16llu %16llu %7.3f  (every <module>.weight, norms included)\n", "total",
               (unsigned long long)rf_mlx_quant_count(q), (unsigned long long)params, (unsigned long long)bytes,
               params ? 8.0 * (double)bytes / (double)params : 0);
        for (uint64_t i = 0; verbose && i < rf_mlx_quant_count(q); i++) {
            const rf_mlx_module *mm = rf_mlx_quant_module(q, i);
            printf("  %-56s %d/%-4d %12llu B\n", mm->name, mm->bits, mm->gs, (unsigned long long)mm->bytes);
        }
    }
    rf_mlx_quant_free(q);
    return 0;
}

/* ------------------------------------------------------------------ JSON */

static json_t *jtally(const char *key, const char *name, const tally *t)
{
    return json_pack("{s:s, s:I, s:I, s:I}", key, name, "tensors", (json_int_t)t->tensors, "params",
                     (json_int_t)t->params, "bytes", (json_int_t)t->bytes);
}

static json_t *json_config(const rf_config *c)
{
    json_t *o = json_object();
    json_object_set_new(o, "model_type", json_string(c->model_type));
    json_object_set_new(o, "architecture", json_string(c->architecture));
    json_object_set_new(o, "num_layers", json_integer(c->num_layers));
    json_object_set_new(o, "hidden_size", json_integer(c->hidden_size));
    json_object_set_new(o, "intermediate_size", json_integer(c->intermediate_size));
    json_object_set_new(o, "num_heads", json_integer(c->num_heads));
    json_object_set_new(o, "num_kv_heads", json_integer(c->num_kv_heads));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "tie_word_embeddings", json_boolean(c->tie_word_embeddings));
    json_object_set_new(o, "attention_bias", json_boolean(c->attention_bias));
    json_object_set_new(o, "rms_norm_eps", json_real(c->rms_norm_eps));
    json_object_set_new(o, "rope_theta", json_real(c->rope.theta));
    json_t *rs = json_null();
    if (c->rope.type[0]) {
        rs = json_pack("{s:s, s:f}", "rope_type", c->rope.type, "factor", c->rope.factor);
        if (!strcmp(c->rope.type, "llama3")) {
            json_object_set_new(rs, "low_freq_factor", json_real(c->rope.low_freq_factor));
            json_object_set_new(rs, "high_freq_factor", json_real(c->rope.high_freq_factor));
        }
        if (c->rope.original_max_pos)
            json_object_set_new(rs, "original_max_position_embeddings", json_integer(c->rope.original_max_pos));
    }
    json_object_set_new(o, "rope_scaling", rs);
    json_object_set_new(o, "family_supported", json_boolean(rf_config_runnable(c)));
    json_object_set_new(o, "hidden_act", json_string(rf_act_name(c->act)));
    json_object_set_new(o, "mlp_bias", json_boolean(c->mlp_bias));
    json_object_set_new(o, "partial_rotary_factor", json_real(c->partial_rotary));
    json_object_set_new(o, "layers", json_pack("{s:i, s:i, s:i, s:i}", "sliding", count_layers(c, RF_LAYER_SLIDING),
                                               "chunked", count_layers(c, RF_LAYER_CHUNKED), "nope",
                                               count_layers(c, RF_LAYER_NOPE), "moe", count_layers(c, RF_LAYER_MOE)));
    if (c->kv_lora_rank)
        json_object_set_new(o, "mla", json_pack("{s:i, s:i, s:i, s:i, s:i}", "kv_lora_rank", c->kv_lora_rank,
                                                "q_lora_rank", c->q_lora_rank, "qk_nope_head_dim", c->qk_nope_head_dim,
                                                "qk_rope_head_dim", c->qk_rope_head_dim, "v_head_dim", c->v_head_dim));
    if (c->fp8_block[0]) json_object_set_new(o, "fp8_block", json_pack("[i, i]", c->fp8_block[0], c->fp8_block[1]));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "bos_token_id", c->bos_token_id >= 0 ? json_integer(c->bos_token_id) : json_null());
    json_object_set_new(o, "eos_token_id", c->eos_token_id >= 0 ? json_integer(c->eos_token_id) : json_null());
    json_object_set_new(o, "dtype", c->torch_dtype ? json_string(rf_dtype_name(c->torch_dtype)) : json_null());
    json_t *moe = json_null();
    if (c->num_experts) {
        json_t *layers = json_array();
        for (int l = 0; l < c->num_layers; l++)
            if (rf_config_layer_is_moe(c, l)) json_array_append_new(layers, json_integer(l));
        moe = json_pack("{s:i, s:i, s:i, s:b, s:o, s:i, s:i, s:i}", "num_experts", c->num_experts, "experts_per_tok",
                        c->experts_per_tok, "moe_intermediate_size", c->moe_intermediate_size, "norm_topk_prob",
                        c->norm_topk_prob, "moe_layers", layers, "shared_intermediate_size", c->shared_intermediate,
                        "n_group", c->n_group, "topk_group", c->topk_group);
    }
    json_object_set_new(o, "moe", moe);
    return o;
}

static json_t *json_shape(const rf_tensor *t)
{
    json_t *a = json_array();
    for (int d = 0; d < t->ndim; d++) json_array_append_new(a, json_integer((json_int_t)t->shape[d]));
    return a;
}

static void json_verbose(const rf_model *m, json_t *root)
{
    json_t *ts = json_array(), *us = json_array();
    for (uint64_t i = 0; i < rf_model_tensor_count(m); i++) {
        const rf_tinfo *ti = rf_model_tinfo(m, i);
        json_array_append_new(ts, json_pack("{s:s, s:s, s:o, s:s, s:i, s:i, s:i, s:b}", "name", ti->t->name,
                                            "dtype", rf_dtype_name(ti->t->dtype), "shape", json_shape(ti->t),
                                            "role", rf_role_name(ti->role), "layer", ti->layer, "expert",
                                            ti->expert, "unit", ti->unit, "quant_aux", ti->quant_aux));
    }
    for (uint64_t u = 0; u < rf_model_unit_count(m); u++) {
        const rf_unit *un = rf_model_unit(m, u);
        json_t *mem = json_array();
        for (int k = 0; k < un->n_members; k++) json_array_append_new(mem, json_integer(un->members[k]));
        json_array_append_new(us, json_pack("{s:s, s:s, s:i, s:I, s:I, s:i, s:o, s:I, s:s, s:b}", "name", un->name,
                                            "role", rf_role_name(un->role), "layer", un->layer, "rows",
                                            (json_int_t)un->rows, "cols", (json_int_t)un->cols, "experts",
                                            un->n_experts, "members", mem, "params", (json_int_t)un->nparams,
                                            "dtype", rf_dtype_name(un->dtype), "quantizable", un->quantizable));
    }
    json_object_set_new(root, "tensor_list", ts);
    json_object_set_new(root, "unit_list", us);
}

static int print_json(const rf_model *m, const summary *s, int verbose)
{
    const rf_st *st = rf_model_st(m);
    json_t *root = json_object();
    json_object_set_new(root, "model_dir", json_string(rf_model_dir(m)));
    json_object_set_new(root, "config", json_config(rf_model_config(m)));
    json_object_set_new(root, "parameters", json_integer((json_int_t)s->total.params));
    json_object_set_new(root, "tensors", json_integer((json_int_t)rf_model_tensor_count(m)));
    json_object_set_new(root, "units", json_integer((json_int_t)rf_model_unit_count(m)));
    json_object_set_new(root, "quantizable_units", json_integer((json_int_t)s->quantizable_units));
    json_object_set_new(root, "tensor_bytes", json_integer((json_int_t)s->total.bytes));
    json_object_set_new(root, "file_bytes", json_integer((json_int_t)s->file_bytes));
    json_t *files = json_array();
    for (uint64_t f = 0; f < rf_st_file_count(st); f++) {
        const char *p = rf_st_file_path(st, f), *base = strrchr(p, '/');
        json_array_append_new(files, json_pack("{s:s, s:I}", "name", base ? base + 1 : p, "bytes",
                                               (json_int_t)rf_st_file_size(st, f)));
    }
    json_object_set_new(root, "files", files);
    json_t *bd = json_array(), *br = json_array();
    for (int d = 0; d < RF_DT_COUNT; d++)
        if (s->by_dtype[d].tensors) json_array_append_new(bd, jtally("dtype", rf_dtype_name((rf_dtype)d), &s->by_dtype[d]));
    for (int r = 0; r < RF_ROLE_COUNT; r++)
        if (s->by_role[r].tensors) json_array_append_new(br, jtally("role", rf_role_name((rf_role)r), &s->by_role[r]));
    json_object_set_new(root, "by_dtype", bd);
    json_object_set_new(root, "by_role", br);
    if (verbose) json_verbose(m, root);
    if (is_mlx_quantized(m) && mlx_section(m, verbose, root)) {
        json_decref(root);
        return 1;
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10));
    json_decref(root);
    if (!text) {
        fprintf(stderr, "ramfit inspect: out of memory formatting JSON\n");
        return 1;
    }
    printf("%s\n", text);
    free(text);
    return 0;
}

int rf_cmd_inspect(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        fputs(usage_text, stdout);
        return 0;
    }
    const char *dir = NULL;
    int json = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--verbose") || !strcmp(argv[i], "-v")) verbose = 1;
        else if (argv[i][0] == '-' && argv[i][1]) return cli_usage_error("inspect", "unknown option '%s'", argv[i]);
        else if (dir) return cli_usage_error("inspect", "more than one MODEL_DIR ('%s' and '%s')", dir, argv[i]);
        else dir = argv[i];
    }
    if (!dir) return cli_usage_error("inspect", "missing MODEL_DIR");
    if (cli_is_gguf(dir)) return cli_inspect_gguf(dir, json, verbose);
    rf_err err;
    rf_err_clear(&err);
    rf_model *m = NULL;
    if (rf_model_open(dir, &m, &err) != RF_OK) return cli_fail(&err);
    summary s;
    if (summarise(m, &s, &err) != RF_OK) {
        rf_model_free(m);
        return cli_fail(&err);
    }
    int rc = 0;
    if (json) rc = print_json(m, &s, verbose);
    else print_text(m, &s, verbose);
    if (!json && !rc && is_mlx_quantized(m)) rc = mlx_section(m, verbose, NULL);
    rf_model_free(m);
    return rc;
}
