#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    rf_cmd_fn fn;
    const char *summary;
} commands[] = {
    {"inspect", rf_cmd_inspect, "summarise a checkpoint: architecture, parameters, bytes by dtype and role"},
    {"calibrate", rf_cmd_calibrate, "input statistics of every layer on a text: for analyse --stats and GPTQ"},
    {"analyse", rf_cmd_analyse, "measure every unit at every quantization config: the profile the planner reads"},
    {"synth", rf_cmd_synth, "write a synthetic checkpoint shaped like a real architecture (tests, benchmarks)"},
    {"profile", rf_cmd_profile, "profile files: merge the parts of an analysis run on several machines"},
    {"plan", rf_cmd_plan, "choose per-unit quantization for byte budgets from a profile (exact, with report)"},
    {"tokenize", rf_cmd_tokenize, "encode text with a model's tokenizer.json, or decode ids"},
    {"ppl", rf_cmd_ppl, "perplexity of a model (original or quantized) on a text file"},
    {"kld", rf_cmd_kld, "KL-divergence of a quantized model from the original, top-1 agreement, PPL"},
    {"generate", rf_cmd_generate, "generate text from a prompt with the built-in engine"},
    {"quantize", rf_cmd_quantize, "write the MLX checkpoint a plan describes (or analyse + plan + write for a budget)"},
};

static void usage(FILE *f)
{
    fprintf(f, "ramfit %s: fit a large language model into the memory you have\n\n"
               "usage: ramfit <command> [options]   (ramfit <command> --help for details)\n\ncommands:\n",
            RF_VERSION_STRING);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

/* Output that did not reach stdout (a full disk, a closed pipe) is a failure, not exit 0. */
static int flush_stdout(int rc)
{
    errno = 0;
    int bad = ferror(stdout), e = errno;
    if (fflush(stdout) != 0) bad = 1, e = errno;
    if (!bad) return rc;
    fprintf(stderr, "ramfit: error (%s): cannot write the output: %s\n", e == ENOSPC ? "nospace" : "io",
            e ? strerror(e) : "write error");
    return rc ? rc : 1;
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
        printf("ramfit %s\n", RF_VERSION_STRING);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return flush_stdout(commands[i].fn(argc - 1, argv + 1));
    fprintf(stderr, "ramfit: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
