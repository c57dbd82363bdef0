/* ramfit synth: a synthetic checkpoint shaped like a real architecture, for tests and benchmarks. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ramfit synth OUT_DIR --like PRESET [--scale F] [--layers N] [--vocab N] [--experts N]\n"
            "                    [--seed S] [--dtype bf16|f16|f32] [--max-shard-size SIZE] [--threads N] [--force] [--quiet]\n"
            "\n"
            "Write a synthetic Hugging Face checkpoint (config.json, generation_config.json, safetensors\n"
            "shards + index) with the tensor names and shapes of a real architecture and trained-looking\n"
            "weight statistics (log-normal row scales, Student-t entries, outlier input channels in some\n"
            "layers, per-layer std, norms near 1). Deterministic from --seed. No tokenizer.\n"
            "\n"
            "  --like PRESET         architecture:");
    for (int i = 0; i < rf_synth_preset_count(); i++) fprintf(f, "%s%s", i % 5 ? ", " : "\n                          ", rf_synth_preset_name(i));
    fprintf(f,
            "\n  --scale F             shrink widths by F in (0, 1] (multiples of 128, heads and GQA ratio kept)\n"
            "  --layers N            number of layers (default: the architecture's)\n"
            "  --vocab N             vocabulary size (default: the architecture's)\n"
            "  --experts N           experts per MoE layer (default: the architecture's)\n"
            "  --seed S              random seed (default 1)\n"
            "  --dtype T             bf16 (default), f16 or f32\n"
            "  --max-shard-size SIZE shard size limit (default 5GB, like Hugging Face)\n"
            "  --threads N           generator threads (default: all CPUs)\n"
            "  --force               write into an existing non-empty OUT_DIR (its weights are replaced)\n"
            "  --quiet               no progress display\n");
}

/* 1: DIR is missing; 0: an empty directory; -1: anything else (a file, or a directory with files). */
static int dir_state(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 1 : -1;
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n ? -1 : 0;
}


int rf_cmd_synth(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) { usage(stdout); return 0; }
    rf_synth_opts o;
    rf_synth_opts_default(&o);
    o.like = NULL;
    const char *dir = NULL;
    int quiet = 0, force = 0;
    rf_err err = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long long n;
        if (!strcmp(a, "--quiet") || !strcmp(a, "-q")) { quiet = 1; continue; }
        if (!strcmp(a, "--force")) { force = 1; continue; }
        if (a[0] != '-') {
            if (dir) return cli_usage_error("synth", "more than one output directory ('%s', '%s')", dir, a);
            dir = a;
            continue;
        }
        if (!v) return cli_usage_error("synth", "%s needs a value", a);
        i++;
        if (!strcmp(a, "--like")) o.like = v;
        else if (!strcmp(a, "--scale")) {
            char *end;
            o.scale = strtod(v, &end);
            if (*end || !(o.scale > 0 && o.scale <= 1)) return cli_usage_error("synth", "--scale needs a number in (0, 1]");
        } else if (!strcmp(a, "--layers") || !strcmp(a, "--vocab") || !strcmp(a, "--experts") || !strcmp(a, "--threads")) {
            int rc = cli_int_arg("synth", a, v, 1, 1 << 24, &n);
            if (rc) return rc;
            if (!strcmp(a, "--layers")) o.layers = (int)n;
            else if (!strcmp(a, "--vocab")) o.vocab = (int)n;
            else if (!strcmp(a, "--experts")) o.experts = (int)n;
            else o.threads = (int)n;
        } else if (!strcmp(a, "--seed")) {
            long long sd;
            int rc = cli_int_arg("synth", a, v, 0, LLONG_MAX, &sd);
            if (rc) return rc;
            o.seed = (uint64_t)sd;
        } else if (!strcmp(a, "--dtype")) {
            o.dtype = !strcmp(v, "bf16") ? RF_DT_BF16 : !strcmp(v, "f16") ? RF_DT_F16 : !strcmp(v, "f32") ? RF_DT_F32 : RF_DT_INVALID;
            if (!o.dtype) return cli_usage_error("synth", "--dtype needs bf16, f16 or f32");
        } else if (!strcmp(a, "--max-shard-size")) {
            if (rf_parse_size(v, &o.max_shard_bytes, &err)) return cli_usage_error("synth", "--max-shard-size: %s", err.msg);
            if (!o.max_shard_bytes) return cli_usage_error("synth", "--max-shard-size: must be positive");
        } else {
            return cli_usage_error("synth", "unknown option '%s'", a);
        }
    }
    if (!dir) return cli_usage_error("synth", "no output directory given");
    if (!o.like) return cli_usage_error("synth", "--like PRESET is required (see --help)");
    rf_config cfg;
    if (rf_synth_config(&o, &cfg, &err)) return cli_fail(&err);
    /* OUT_DIR may be a real model: its weights and config.json are replaced only when asked. */
    int state = dir_state(dir);
    if (state < 0 && !force) {
        fprintf(stderr, "ramfit: error (exists): %s exists and is not an empty directory (--force writes into it, "
                        "replacing its weights and config.json)\n", dir);
        return 1;
    }
    cli_install_signals();
    cli_progress bar;
    cli_progress_init(&bar, "synth", quiet);
    rf_progress prog = {cli_progress_cb, &bar, cli_cancel_flag()};
    double t0 = cli_now();
    rf_status s = rf_synth_write(&o, dir, &prog, &err);
    cli_progress_end(&bar);
    if (s && state == 1) rmdir(dir); /* only the directory this run made, and only when left empty */
    if (s) return cli_fail(&err);
    if (!quiet)
        printf("wrote %s: %s-like (%s), hidden %d, %s %d, %d layers, %d/%d heads, vocab %d, %d experts, %.1f s\n", dir,
               o.like, cfg.model_type, cfg.hidden_size, cfg.num_experts ? "expert intermediate" : "intermediate",
               cfg.num_experts ? cfg.moe_intermediate_size : cfg.intermediate_size, cfg.num_layers, cfg.num_heads,
               cfg.num_kv_heads, cfg.vocab_size, cfg.num_experts, cli_now() - t0);
    return 0;
}
