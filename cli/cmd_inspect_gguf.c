/* ramfit inspect FILE.gguf: what a GGUF file holds (ramfit's or llama.cpp's), from its header. */
#include "cli.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

typedef struct gtally { uint64_t tensors, params, bytes; } gtally;

static json_t *kv_json(const rf_gguf *g, uint64_t i)
{
    rf_gguf_vtype t = rf_gguf_kv_type(g, i);
    char buf[512];
    if (t == RF_GV_ARR) {
        json_t *o = json_object();
        json_object_set_new(o, "array_of", json_string(rf_gguf_vtype_name(rf_gguf_kv_arr_type(g, i))));
        json_object_set_new(o, "length", json_integer((json_int_t)rf_gguf_kv_arr_len(g, i)));
        return o;
    }
    rf_err e;
    if (t == RF_GV_STR) {
        const char *s;
        uint64_t n;
        if (rf_gguf_get_str(g, rf_gguf_kv_key(g, i), &s, &n, &e)) return json_null();
        return json_stringn_nocheck(s, (size_t)n);
    }
    if (t == RF_GV_BOOL) {
        int64_t v = 0;
        rf_gguf_get_int(g, rf_gguf_kv_key(g, i), &v, &e);
        return json_boolean(v);
    }
    if (t == RF_GV_F32 || t == RF_GV_F64) {
        double v = 0;
        rf_gguf_get_float(g, rf_gguf_kv_key(g, i), &v, &e);
        return json_real(v);
    }
    rf_gguf_kv_text(g, i, buf, sizeof buf);
    return json_integer((json_int_t)strtoll(buf, NULL, 10));
}

static const char *str_key(const rf_gguf *g, const char *key, char *buf, size_t cap)
{
    int64_t i = rf_gguf_find_kv(g, key);
    if (i < 0) return "-";
    rf_gguf_kv_text(g, (uint64_t)i, buf, cap);
    return buf;
}

int cli_inspect_gguf(const char *path, int json, int verbose)
{
    rf_err err;
    rf_err_clear(&err);
    rf_gguf *g = NULL;
    if (rf_gguf_open(path, &g, &err) != RF_OK) return cli_fail(&err);
    gtally by_type[RF_GT_COUNT] = {{0}}, total = {0};
    for (uint64_t i = 0; i < rf_gguf_tensor_count(g); i++) {
        const rf_gguf_tensor *t = rf_gguf_tensor_at(g, i);
        gtally *ts[2] = {&by_type[t->type], &total};
        for (int k = 0; k < 2; k++) ts[k]->tensors++, ts[k]->params += t->nelem, ts[k]->bytes += t->nbytes;
    }
    double bpw = total.params ? 8.0 * (double)total.bytes / (double)total.params : 0;
    char arch[128], buf[512];
    str_key(g, "general.architecture", arch, sizeof arch);
    if (json) {
        json_t *root = json_object(), *meta = json_object(), *types = json_array();
        json_object_set_new(root, "format", json_string("gguf"));
        json_object_set_new(root, "file", json_string(path));
        json_object_set_new(root, "version", json_integer(rf_gguf_version(g)));
        json_object_set_new(root, "file_bytes", json_integer((json_int_t)rf_gguf_file_size(g)));
        json_object_set_new(root, "architecture", json_string(arch));
        json_object_set_new(root, "tensors", json_integer((json_int_t)total.tensors));
        json_object_set_new(root, "params", json_integer((json_int_t)total.params));
        json_object_set_new(root, "tensor_bytes", json_integer((json_int_t)total.bytes));
        json_object_set_new(root, "bpw", json_real(bpw));
        for (uint64_t i = 0; i < rf_gguf_kv_count(g); i++) json_object_set_new(meta, rf_gguf_kv_key(g, i), kv_json(g, i));
        json_object_set_new(root, "metadata", meta);
        for (int t = 0; t < RF_GT_COUNT; t++)
            if (by_type[t].tensors)
                json_array_append_new(types, json_pack("{s:s, s:I, s:I, s:I}", "type", rf_gtype_name(t), "tensors",
                                                       (json_int_t)by_type[t].tensors, "params",
                                                       (json_int_t)by_type[t].params, "bytes",
                                                       (json_int_t)by_type[t].bytes));
        json_object_set_new(root, "by_type", types);
        if (verbose) {
            json_t *list = json_array();
            for (uint64_t i = 0; i < rf_gguf_tensor_count(g); i++) {
                const rf_gguf_tensor *t = rf_gguf_tensor_at(g, i);
                json_t *ne = json_array();
                for (int d = 0; d < t->ndim; d++) json_array_append_new(ne, json_integer((json_int_t)t->ne[d]));
                json_array_append_new(list, json_pack("{s:s, s:s, s:o, s:I, s:I}", "name", t->name, "type",
                                                      rf_gtype_name(t->type), "ne", ne, "bytes", (json_int_t)t->nbytes,
                                                      "offset", (json_int_t)t->offset));
            }
            json_object_set_new(root, "tensor_list", list);
        }
        char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(root);
        if (!text) {
            rf_gguf_close(g);
            fprintf(stderr, "ramfit: nomem: out of memory\n");
            return 1;
        }
        printf("%s\n", text);
        free(text);
        rf_gguf_close(g);
        return 0;
    }
    char size[32], tb[32];
    rf_format_size(rf_gguf_file_size(g), size, sizeof size);
    rf_format_size(total.bytes, tb, sizeof tb);
    printf("file          %s (GGUF v%u, %s, alignment %llu)\n", path, rf_gguf_version(g), size,
           (unsigned long long)rf_gguf_alignment(g));
    printf("architecture  %s\n", arch);
    printf("name          %s\n", str_key(g, "general.name", buf, sizeof buf));
    static const char *const shown[] = {"context_length", "embedding_length", "block_count", "feed_forward_length",
                                        "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                        "rope.freq_base", "attention.layer_norm_rms_epsilon", "expert_count",
                                        "expert_used_count", "expert_feed_forward_length"};
    for (size_t k = 0; k < sizeof shown / sizeof shown[0]; k++) {
        char key[192];
        snprintf(key, sizeof key, "%s.%s", arch, shown[k]);
        if (rf_gguf_find_kv(g, key) >= 0) printf("  %-32s %s\n", shown[k], str_key(g, key, buf, sizeof buf));
    }
    int64_t toks = rf_gguf_find_kv(g, "tokenizer.ggml.tokens");
    printf("tokenizer     %s", str_key(g, "tokenizer.ggml.model", buf, sizeof buf));
    if (rf_gguf_find_kv(g, "tokenizer.ggml.pre") >= 0) printf(" (pre %s)", str_key(g, "tokenizer.ggml.pre", buf, sizeof buf));
    printf(", %llu tokens\n", toks >= 0 ? (unsigned long long)rf_gguf_kv_arr_len(g, (uint64_t)toks) : 0ull);
    printf("tensors       %llu, %llu parameters, %s of tensor data, %.3f bits per weight\n",
           (unsigned long long)total.tensors, (unsigned long long)total.params, tb, bpw);
    printf("\n%-8s %8s %16s %16s %8s\n", "type", "tensors", "parameters", "bytes", "share");
    for (int t = 0; t < RF_GT_COUNT; t++)
        if (by_type[t].tensors)
            printf("%-8s %8llu %16llu %16llu %7.2f%%\n", rf_gtype_name(t), (unsigned long long)by_type[t].tensors,
                   (unsigned long long)by_type[t].params, (unsigned long long)by_type[t].bytes,
                   total.bytes ? 100.0 * (double)by_type[t].bytes / (double)total.bytes : 0.0);
    if (verbose) {
        printf("\nmetadata (%llu keys)\n", (unsigned long long)rf_gguf_kv_count(g));
        for (uint64_t i = 0; i < rf_gguf_kv_count(g); i++) {
            rf_gguf_kv_text(g, i, buf, sizeof buf);
            printf("  %-44s %-7s %.120s\n", rf_gguf_kv_key(g, i), rf_gguf_vtype_name(rf_gguf_kv_type(g, i)), buf);
        }
        printf("\ntensors\n");
        for (uint64_t i = 0; i < rf_gguf_tensor_count(g); i++) {
            const rf_gguf_tensor *t = rf_gguf_tensor_at(g, i);
            int o = snprintf(buf, sizeof buf, "[");
            for (int d = 0; d < t->ndim; d++) o += snprintf(buf + o, sizeof buf - (size_t)o, "%s%llu", d ? ", " : "", (unsigned long long)t->ne[d]);
            snprintf(buf + o, sizeof buf - (size_t)o, "]");
            printf("  %-40s %-7s %-22s %12llu B\n", t->name, rf_gtype_name(t->type), buf, (unsigned long long)t->nbytes);
        }
    }
    rf_gguf_close(g);
    return 0;
}
