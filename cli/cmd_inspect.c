#include "cli.h"

int rf_cmd_inspect(int argc, char **argv)
{
    if (cli_wants_help(argc, argv)) {
        printf("usage: ramfit inspect MODEL_DIR [--json] [--verbose]\n");
        return 0;
    }
    return cli_usage_error("inspect", "not implemented yet");
}
