/* Shared pieces of the ramfit command-line tool. The CLI uses only the public API. */
#ifndef RF_CLI_H
#define RF_CLI_H

#include "ramfit.h"

#include <stdio.h>

/* Each subcommand: argv[0] is the subcommand name. Returns the process exit status. */
typedef int (*rf_cmd_fn)(int argc, char **argv);
int rf_cmd_inspect(int argc, char **argv);

/* Print "ramfit: <status>: <message>" to stderr and return 1. */
int cli_fail(const rf_err *err);
/* Print "ramfit <cmd>: <message>" to stderr and return 2 (usage errors). */
int cli_usage_error(const char *cmd, const char *fmt, ...);
/* 1 if argv has "-h"/"--help" anywhere. */
int cli_wants_help(int argc, char **argv);

/* Progress bar on stderr when it is a terminal (else a line every 10%); usable as rf_progress.fn. */
typedef struct cli_progress {
    const char *label;
    int quiet, tty, last_decile;
    double t0, last_draw;
} cli_progress;
void cli_progress_init(cli_progress *p, const char *label, int quiet);
void cli_progress_cb(void *user, uint64_t done, uint64_t total, const char *what);
void cli_progress_end(cli_progress *p);
/* Ctrl-C sets *cli_cancel_flag() instead of killing the process (second Ctrl-C kills). */
void cli_install_sigint(void);
volatile int *cli_cancel_flag(void);
double cli_now(void);

#endif
