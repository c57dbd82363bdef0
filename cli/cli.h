/* Shared pieces of the ramfit command-line tool. The CLI uses only the public API. */
#ifndef RF_CLI_H
#define RF_CLI_H

#include "ramfit.h"

#include <stdio.h>

/* Each subcommand: argv[0] is the subcommand name. Returns the process exit status. */
typedef int (*rf_cmd_fn)(int argc, char **argv);
int rf_cmd_inspect(int argc, char **argv);
int rf_cmd_analyse(int argc, char **argv);
int rf_cmd_synth(int argc, char **argv);
int rf_cmd_plan(int argc, char **argv);
int rf_cmd_tokenize(int argc, char **argv);
int rf_cmd_ppl(int argc, char **argv);
int rf_cmd_kld(int argc, char **argv);
int rf_cmd_generate(int argc, char **argv);
int rf_cmd_quantize(int argc, char **argv);
int rf_cmd_profile(int argc, char **argv);
int rf_cmd_calibrate(int argc, char **argv);
/* inspect of a .gguf file (cmd_inspect_gguf.c). */
int cli_inspect_gguf(const char *path, int json, int verbose);
/* 1 if PATH is a regular file that starts with the GGUF magic. */
int cli_is_gguf(const char *path);

/* Print "ramfit: <status>: <message>" to stderr and return 1. */
int cli_fail(const rf_err *err);
/* Print "ramfit <cmd>: <message>" to stderr and return 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...);
/* 1 if argv has "-h"/"--help" anywhere. */
int cli_wants_help(int argc, char **argv);

/* A whole-number option OPT = TEXT in [LO, HI]: 0 and *OUT, or a usage error that names the real
 * problem (not a whole number, or out of range with the range) and its exit status 2. */
int cli_int_arg(const char *cmd, const char *opt, const char *text, long long lo, long long hi, long long *out);
/* --dtype bf16|f16|f32 (the dtype F32 tensors are written in): 0 and *OUT, or a usage exit status. */
int cli_parse_dtype(const char *cmd, const char *text, rf_dtype *out);

/* 1 if both paths exist and are the same file (links resolved). */
int cli_same_file(const char *a, const char *b);
/* 0 if a file can be created at PATH (its directory exists and is writable); otherwise prints the error
 * naming PATH and returns 1. For commands whose long work would otherwise find out only at the end. */
int cli_check_output(const char *path);
/* The profile 'ramfit analyse MODEL_DIR' writes by default (and one-shot quantize reuses):
 * NAME.profile.json, or NAME.gguf.profile.json for GGUF candidates. 0 when none can be named. */
int cli_default_profile(const char *model_dir, int gguf, char *out, size_t cap);
/* 1 if a file created at PATH would land in DIR or below it (links resolved). */
int cli_file_in_dir(const char *path, const char *dir);

/* Progress bar on stderr when it is a terminal (else a line every 10%); usable as rf_progress.fn. */
typedef struct cli_progress {
    const char *label;
    int quiet, tty, last_decile;
    double t0, last_draw;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label, int quiet);
void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *what);
void cli_progress_end(cli_progress *p);
/* SIGINT (Ctrl-C), SIGTERM and SIGHUP set *cli_cancel_flag() instead of killing the process (a
 * second one kills); SIGXFSZ is ignored so that writes past a file size limit fail with EFBIG. */
void cli_install_signals(void);
volatile int *cli_cancel_flag(void);
double cli_now(void);

/* ppl and kld (cmd_ppl.c): shared options, the text file tokenized once (no BOS; *bos gets the
 * BOS id the tokenizer adds, or -1), and a perplexity result as a JSON object. */
typedef struct cli_eval_args {
    const char *file;
    int ctx, threads, json, quiet;
    int fast;                 /* --fast: 8-bit activations (ppl: the model; kld: the quantized one) */
    rf_ppl_protocol protocol;
    uint64_t max_tokens;
} cli_eval_args;
/* Parse argv (npos positional directories into pos); 0 or a usage exit status. */
int cli_eval_parse(const char *cmd, int argc, char **argv, int npos, const char **pos, cli_eval_args *a);
/* Largest text ppl/kld read (rf_read_file's bound). */
#define CLI_MAX_TEXT ((uint64_t)256 << 20)
rf_status cli_tokenize_file(const char *model_dir, const char *path, int32_t **ids, uint64_t *n, int *bos,
                            rf_err *err);
struct json_t;
struct json_t *cli_ppl_json(const rf_ppl_result *r);
/* A JSON number, or null when V is not finite (JSON has no NaN). */
struct json_t *cli_json_num(double v);
/* A JSON string of STR; bytes that are not UTF-8 become U+FFFD. */
struct json_t *cli_json_str(const char *str);

#endif
