/* The one JSON loader (io/json.c) and bounded file reads (rf_read_file): any valid JSON number
 * loads (jansson alone refuses integers beyond int64 and reals beyond double), positions in
 * error messages stay right, fields out of range are named, files read whole have a size limit
 * (a directory, /dev/zero or a weight file are refused before they fill memory), and config.json
 * getters say what is wrong with a value. */
#include "testutil.h"
#include "io/json_internal.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static json_t *parse_ok(const char *text)
{
    json_t *j;
    rf_err err;
    TU_OK(rf_json_parse(text, strlen(text), "t.json", JSON_REJECT_DUPLICATES, &j, &err), &err);
    return j;
}

static void test_numbers(void **state)
{
    (void)state;
    /* Llama-2/3's tokenizer_config.json: jansson alone says "too big integer" */
    json_error_t je;
    const char *llama = "{\"model_max_length\": 1000000000000000019884624838656, \"x\": 5}";
    assert_null(json_loads(llama, 0, &je));
    json_t *j = parse_ok(llama);
    json_t *v = json_object_get(j, "model_max_length");
    assert_true(json_is_real(v));
    assert_true(fabs(json_real_value(v) / 1e30 - 1) < 1e-12);
    int64_t x;
    assert_int_equal(rf_json_int(v, 0, INT64_MAX, &x), 1); /* out of range, not "not an integer" */
    assert_int_equal(rf_json_int(json_object_get(j, "x"), 0, 10, &x), 0);
    assert_int_equal(x, 5);
    assert_int_equal(rf_json_int(json_object_get(j, "x"), 6, 10, &x), 1);
    assert_int_equal(rf_json_int(json_object_get(j, "nope"), 0, 10, &x), -1);
    json_decref(j);
    /* the int64 edges stay integers; one past them becomes a real */
    j = parse_ok("[9223372036854775807, -9223372036854775808, 9223372036854775808, -9223372036854775809, "
                 "18446744073709551615, 1e400, -1e400, 1e-400, 0.5, -0]");
    assert_true(json_is_integer(json_array_get(j, 0)) && json_integer_value(json_array_get(j, 0)) == INT64_MAX);
    assert_true(json_is_integer(json_array_get(j, 1)) && json_integer_value(json_array_get(j, 1)) == INT64_MIN);
    assert_true(json_real_value(json_array_get(j, 2)) == 9223372036854775808.0);
    assert_true(json_real_value(json_array_get(j, 3)) == -9223372036854775808.0);
    assert_true(json_real_value(json_array_get(j, 4)) == 18446744073709551616.0);
    assert_true(json_real_value(json_array_get(j, 5)) == 1e308);
    assert_true(json_real_value(json_array_get(j, 6)) == -1e308);
    assert_true(json_real_value(json_array_get(j, 7)) == 0);
    uint64_t u;
    assert_int_equal(rf_json_u64(json_array_get(j, 4), INT64_MAX, &u), 1);
    assert_int_equal(rf_json_u64(json_array_get(j, 0), INT64_MAX, &u), 0);
    assert_true(u == (uint64_t)INT64_MAX);
    json_decref(j);
    /* a 400-digit integer, and digits inside strings are left alone */
    char big[600] = "{\"s\": \"123456789012345678901234567890\", \"n\": ";
    size_t l = strlen(big);
    for (int i = 0; i < 400; i++) big[l++] = (char)('1' + i % 9);
    memcpy(big + l, "}", 2);
    j = parse_ok(big);
    assert_string_equal(json_string_value(json_object_get(j, "s")), "123456789012345678901234567890");
    assert_true(json_real_value(json_object_get(j, "n")) == 1e308);
    json_decref(j);
}

static void test_errors(void **state)
{
    (void)state;
    /* positions are those of the file as written: jansson's own on the same text with the big
     * numbers written as reals of the same length */
    const char *text = "{\"a\": 100000000000000000000000,\n \"b\": [1, 99999999999999999999, -1e999, 2,,]}";
    const char *same = "{\"a\": 1.0000000000000000000000,\n \"b\": [1, 9.999999999999999999, -1e099, 2,,]}";
    json_error_t je;
    assert_null(json_loads(same, 0, &je));
    char want[400];
    snprintf(want, sizeof want, "cfg.json: invalid JSON at line %d column %d: %s", je.line, je.column, je.text);
    assert_int_equal(je.line, 2);
    json_t *j;
    rf_err err;
    assert_int_equal(rf_json_parse(text, strlen(text), "cfg.json", 0, &j, &err), RF_ERR_FORMAT);
    assert_null(j);
    assert_string_equal(err.msg, want);
    /* duplicates still refused where asked */
    assert_int_equal(rf_json_parse("{\"a\":1,\"a\":2}", 13, "d.json", JSON_REJECT_DUPLICATES, &j, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "duplicate"));
    /* malformed numbers are jansson's to report */
    assert_int_equal(rf_json_parse("[1.]", 4, "n.json", 0, &j, &err), RF_ERR_FORMAT);
    assert_int_equal(rf_json_parse("[-]", 3, "n.json", 0, &j, &err), RF_ERR_FORMAT);
    assert_int_equal(rf_json_parse("[01]", 4, "n.json", 0, &j, &err), RF_ERR_FORMAT);
}

/* The literal text of rewritten numbers comes back in document order, for a copy of the file. */
static void test_literals(void **state)
{
    (void)state;
    const char *t = "{\"z\": [1, 99999999999999999999], \"a\": {\"q\": 2.5, \"r\": -1e999}, \"s\": \"77777777777777777777\"}";
    json_t *j;
    rf_json_bignums big;
    rf_err err;
    TU_OK(rf_json_parse_keep(t, strlen(t), "k.json", JSON_REJECT_DUPLICATES, &j, &big, &err), &err);
    assert_int_equal(big.n, 2);
    assert_int_equal(big.v[0].number, 1);
    assert_string_equal(big.v[0].literal, "99999999999999999999");
    assert_int_equal(big.v[1].number, 3);
    assert_string_equal(big.v[1].literal, "-1e999");
    rf_json_bignums_free(&big);
    json_decref(j);
}

static void test_read_file_limits(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp(), path[4200];
    char *buf;
    size_t n;
    rf_err err;
    /* a directory: named as one (once "Input/output error") */
    assert_int_equal(rf_read_file(dir, 1000, &buf, &n, &err), RF_ERR_INVALID);
    assert_non_null(strstr(err.msg, "is a directory"));
    /* missing */
    snprintf(path, sizeof path, "%s/missing.json", dir);
    assert_int_equal(rf_read_file(path, 1000, &buf, &n, &err), RF_ERR_NOT_FOUND);
    assert_non_null(strstr(err.msg, "missing.json"));
    /* an endless device: refused at the limit, not read until memory runs out */
    assert_int_equal(rf_read_file("/dev/zero", 1 << 20, &buf, &n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "larger than the 1 MiB"));
    /* a regular file over the limit, and one at it */
    snprintf(path, sizeof path, "%s/f.txt", dir);
    char data[300];
    memset(data, 'x', sizeof data);
    assert_int_equal(tu_write_file(path, data, sizeof data), 0);
    assert_int_equal(rf_read_file(path, 299, &buf, &n, &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "300 bytes"));
    TU_OK(rf_read_file(path, 300, &buf, &n, &err), &err);
    assert_int_equal(n, 300);
    assert_int_equal(buf[300], 0);
    free(buf);
    /* a weight file where JSON is expected: refused from its first bytes */
    const char *model = tu_model_dir("stories260k");
    if (model) {
        snprintf(path, sizeof path, "%s/model.safetensors", model);
        assert_int_equal(rf_json_read_text(path, 1 << 30, &buf, &n, &err), RF_ERR_FORMAT);
        assert_non_null(strstr(err.msg, "not a JSON file (a safetensors weight file?)"));
    }
    tu_rmtree(dir);
    free(dir);
}

static const char *cfg_base = "{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                              "\"num_attention_heads\": 8, \"vocab_size\": 100, \"num_hidden_layers\": ";

static rf_status cfg_with_layers(const char *layers, rf_err *err)
{
    char text[1024];
    snprintf(text, sizeof text, "%s%s}", cfg_base, layers);
    rf_config c;
    return rf_config_parse(text, "m/config.json", &c, err);
}

/* config.json getters name the real problem (issue 13: "above INT_MAX says must be >= 1", "1e9
 * says out of memory"), and a huge number elsewhere in the file does not break loading. */
static void test_config_messages(void **state)
{
    (void)state;
    rf_err err;
    assert_int_equal(cfg_with_layers("4294967296", &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "'num_hidden_layers' is out of range (4294967296; ramfit supports at most 2147483647)"));
    /* beyond int64: jansson alone said "too big integer" */
    assert_int_equal(cfg_with_layers("100000000000000000000000", &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "'num_hidden_layers' is out of range"));
    assert_int_equal(cfg_with_layers("1000000000", &err), RF_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "ramfit supports at most"));
    assert_null(strstr(err.msg, "memory"));
    assert_int_equal(cfg_with_layers("0", &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "must be >= 1"));
    assert_int_equal(cfg_with_layers("2.5", &err), RF_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "must be an integer"));
    TU_OK(cfg_with_layers("2, \"model_max_length\": 1000000000000000019884624838656", &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numbers),          cmocka_unit_test(test_errors),
        cmocka_unit_test(test_literals),         cmocka_unit_test(test_read_file_limits),
        cmocka_unit_test(test_config_messages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
