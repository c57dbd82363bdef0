/* ramfit profile: work on profile files. 'merge' joins the parts of a sharded analysis
 * (docs/distributed.md). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
    "usage: ramfit profile merge PART... -o PROFILE [--force]\n"
    "\n"
    "Join the parts written by 'ramfit analyse MODEL_DIR --shard K/N' (one per K = 1..N, in any\n"
    "order) into one profile. The parts must come from the same checkpoint (fingerprint and shard\n"
    "files), ramfit version and options, and cover every unit exactly once; the result is byte for\n"
    "byte what one 'ramfit analyse' of the whole model writes.\n"
    "\n"
    "  -o PROFILE   output file (and its data file, PROFILE less .json + .bin); written via .tmp\n"
    "               + rename\n"
    "  --force      replace an existing PROFILE\n";

static int cmd_merge(int argc, char **argv)
{
    const char *out = NULL;
    int force = 0;
    const char **names = calloc((size_t)argc, sizeof *names);
    if (!names) { fprintf(stderr, "ramfit profile merge: out of memory\n"); return 1; }
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) {
            if (i + 1 >= argc) { free(names); return cli_usage_error("profile merge", "%s needs a file name", argv[i]); }
            out = argv[++i];
        } else if (!strcmp(argv[i], "--force")) {
            force = 1;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            free(names);
            return cli_usage_error("profile merge", "unknown option '%s'", argv[i]);
        } else {
            names[n++] = argv[i];
        }
    }
    if (!out) { free(names); return cli_usage_error("profile merge", "no output given (-o PROFILE)"); }
    if (!n) { free(names); return cli_usage_error("profile merge", "no parts given"); }
    for (size_t i = 0; i < n; i++)
        if (cli_same_file(names[i], out)) {
            free(names);
            return cli_usage_error("profile merge", "-o %s is one of the parts: the parts are never overwritten", out);
        }
    FILE *f = force ? NULL : fopen(out, "rb");
    if (f) {
        fclose(f);
        free(names);
        return cli_usage_error("profile merge", "%s exists (--force replaces it)", out);
    }
    if (cli_check_output(out)) { free(names); return 1; }
    rf_profile **parts = calloc(n, sizeof *parts);
    if (!parts) { free(names); fprintf(stderr, "ramfit profile merge: out of memory\n"); return 1; }
    rf_err err = {0};
    rf_status s = RF_OK;
    for (size_t i = 0; i < n && !s; i++) s = rf_profile_load(names[i], &parts[i], &err);
    rf_profile *p = NULL;
    if (!s) s = rf_profile_merge((const rf_profile *const *)parts, n, names, &p, &err);
    if (!s) s = rf_profile_save(p, out, &err);
    int rc = s ? cli_fail(&err) : 0;
    if (!s)
        printf("wrote %s: %llu units from %zu part%s\n", out, (unsigned long long)rf_profile_unit_count(p), n, n == 1 ? "" : "s");
    rf_profile_free(p);
    for (size_t i = 0; parts && i < n; i++) rf_profile_free(parts[i]);
    free(parts);
    free(names);
    return rc;
}

int rf_cmd_profile(int argc, char **argv)
{
    if (argc < 2 || ((!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")))) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "merge")) {
        if (cli_wants_help(argc - 1, argv + 1)) { fputs(usage_text, stdout); return 0; }
        return cmd_merge(argc - 1, argv + 1);
    }
    return cli_usage_error("profile", "unknown subcommand '%s' (expected merge)", argv[1]);
}
