/* ramfit tokenize: run a model's tokenizer.json on text, or decode ids. */
#include "cli.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: ramfit tokenize MODEL_DIR [--text S | --file F] [--ids | --count] [--no-special] [--json]\n"
               "       ramfit tokenize MODEL_DIR --decode IDS [--json]\n\n"
               "Tokenize text with MODEL_DIR/tokenizer.json (and tokenizer_config.json), or with the\n"
               "tokenizer of a .gguf file given as MODEL_DIR (tokenizer.ggml.*).\n"
               "  --text S       text to encode (default: standard input)\n"
               "  --file F       encode the contents of file F\n"
               "  --ids          print only the ids, space-separated\n"
               "  --count        print only the counts\n"
               "  --no-special   do not add the post-processor's special tokens (BOS...)\n"
               "  --decode IDS   decode ids (separated by spaces or commas) to text\n"
               "  --json         machine-readable output\n"
               "Default output: one token per line (id and piece), then the counts.\n");
}

/* JSON string body: escapes quotes, backslashes and control bytes; UTF-8 passes through. */
static void put_json_str(const char *s, size_t n)
{
    putchar('"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') printf("\\%c", c);
        else if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\u%04x", c);
        else putchar(c);
    }
    putchar('"');
}

/* Pieces for people: visible escapes for control characters. */
static void put_piece(const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n') fputs("\\n", stdout);
        else if (c == '\t') fputs("\\t", stdout);
        else if (c == '\r') fputs("\\r", stdout);
        else if (c < 0x20 || c == 0x7F) printf("\\x%02x", c);
        else putchar(c);
    }
}

/* 0 and the ids; else 1 (not a number: *BAD is where), 2 (a number that is no id: negative or
 * beyond int32), -1 out of memory. */
static int parse_ids(const char *s, int32_t **ids, uint64_t *n, const char **bad)
{
    size_t cap = 16;
    *n = 0;
    *ids = malloc(cap * sizeof **ids);
    if (!*ids) return -1;
    while (*s) {
        if (*s == ' ' || *s == ',' || *s == '\t' || *s == '\n' || *s == '[' || *s == ']') { s++; continue; }
        char *end;
        errno = 0;
        *bad = s;
        long long v = strtoll(s, &end, 10);
        if (end == s || (*end && !strchr(" ,\t\n[]", *end))) return 1;
        if (errno || v < 0 || v > INT32_MAX) return 2;
        if (*n == cap) {
            int32_t *p = realloc(*ids, (cap *= 2) * sizeof *p);
            if (!p) return -1;
            *ids = p;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
    }
    return 0;
}

static int do_decode(const rf_tok *tok, const char *arg, int json)
{
    int32_t *ids = NULL;
    uint64_t n = 0;
    const char *bad = arg;
    int pr = parse_ids(arg, &ids, &n, &bad);
    if (pr) {
        free(ids);
        if (pr < 0) return cli_usage_error("tokenize", "out of memory");
        int len = (int)strcspn(bad, " ,\t\n[]");
        if (pr == 1) return cli_usage_error("tokenize", "--decode: '%.*s' is not an id (ids are whole numbers)", len, bad);
        return cli_usage_error("tokenize", "--decode: id %.*s is out of range: this tokenizer's ids are 0 to %d", len, bad,
                               rf_tok_vocab_size(tok) - 1);
    }
    rf_err err;
    char *text;
    uint64_t len;
    rf_status st = rf_tok_decode(tok, ids, n, &text, &len, &err);
    free(ids);
    if (st) return cli_fail(&err);
    if (json) {
        fputs("{\"text\": ", stdout);
        put_json_str(text, len);
        printf(", \"tokens\": %llu}\n", (unsigned long long)n);
    } else {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    free(text);
    return 0;
}

static void print_tokens(const rf_tok *tok, const int32_t *ids, uint64_t n, uint64_t bytes, int only_ids, int count,
                         int json)
{
    if (json) {
        printf("{\"tokens\": %llu, \"bytes\": %llu", (unsigned long long)n, (unsigned long long)bytes);
        if (!count) {
            fputs(", \"ids\": [", stdout);
            for (uint64_t i = 0; i < n; i++) printf("%s%d", i ? ", " : "", (int)ids[i]);
            fputs("]", stdout);
            if (!only_ids) {
                fputs(", \"pieces\": [", stdout);
                for (uint64_t i = 0; i < n; i++) {
                    const char *p = rf_tok_id_to_piece(tok, ids[i]);
                    if (i) fputs(", ", stdout);
                    put_json_str(p ? p : "", p ? strlen(p) : 0);
                }
                fputs("]", stdout);
            }
        }
        puts("}");
        return;
    }
    if (only_ids && !count) {
        for (uint64_t i = 0; i < n; i++) printf("%s%d", i ? " " : "", (int)ids[i]);
        putchar('\n');
        return;
    }
    if (!count)
        for (uint64_t i = 0; i < n; i++) {
            printf("%8d  ", (int)ids[i]);
            put_piece(rf_tok_id_to_piece(tok, ids[i]) ? rf_tok_id_to_piece(tok, ids[i]) : "");
            putchar('\n');
        }
    printf("%llu tokens, %llu bytes", (unsigned long long)n, (unsigned long long)bytes);
    if (n) printf(" (%.2f bytes/token)", (double)bytes / (double)n);
    putchar('\n');
}

int rf_cmd_tokenize(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *dir = NULL, *text = NULL, *file = NULL, *decode = NULL;
    int only_ids = 0, count = 0, json = 0, special = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has_next = i + 1 < argc;
        if (!strcmp(a, "--text") && has_next) text = argv[++i];
        else if (!strcmp(a, "--file") && has_next) file = argv[++i];
        else if (!strcmp(a, "--decode") && has_next) decode = argv[++i];
        else if (!strcmp(a, "--ids")) only_ids = 1;
        else if (!strcmp(a, "--count")) count = 1;
        else if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--no-special")) special = 0;
        else if (a[0] == '-' && a[1]) return cli_usage_error("tokenize", "unknown or incomplete option '%s'", a);
        else if (!dir) dir = a;
        else return cli_usage_error("tokenize", "unexpected argument '%s'", a);
    }
    if (!dir) return cli_usage_error("tokenize", "missing MODEL_DIR");
    if (text && file) return cli_usage_error("tokenize", "give --text or --file, not both");
    if (decode && (text || file)) return cli_usage_error("tokenize", "--decode does not take --text/--file");
    rf_err err;
    rf_tok *tok;
    if (rf_tok_load(dir, &tok, &err)) return cli_fail(&err);
    int rc;
    if (decode) rc = do_decode(tok, decode, json);
    else {
        char *buf = NULL;
        size_t len = 0;
        if (text) len = strlen(text);
        else {
            /* bounded like every whole-file read (ppl --file): a wrong file or /dev/zero is refused */
            if (rf_read_file(file ? file : "/dev/stdin", CLI_MAX_TEXT, &buf, &len, &err)) {
                rf_tok_free(tok);
                return cli_fail(&err);
            }
        }
        int32_t *ids;
        uint64_t n;
        rf_status st = rf_tok_encode(tok, text ? text : buf, len, special, &ids, &n, &err);
        if (st) rc = cli_fail(&err);
        else {
            print_tokens(tok, ids, n, len, only_ids, count, json);
            free(ids);
            rc = 0;
        }
        free(buf);
    }
    rf_tok_free(tok);
    return rc;
}
