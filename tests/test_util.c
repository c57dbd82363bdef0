/* util.c: sizes as people write them ("24GB", "16GiB", "1.5GB", plain bytes), parsed exactly,
 * and the byte counts printed back. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t parse_ok(const char *text)
{
    uint64_t v = 0;
    rf_err err;
    rf_status s = rf_parse_size(text, &v, &err);
    if (s != RF_OK) fail_msg("'%s' -> %s: %s", text, rf_status_name(s), err.msg);
    return v;
}

static void expect_bad(const char *text, const char *need)
{
    uint64_t v = 12345;
    rf_err err;
    rf_status s = rf_parse_size(text, &v, &err);
    if (s != RF_ERR_INVALID || !strstr(err.msg, need))
        fail_msg("'%s' -> %s '%s', want invalid containing '%s'", text, rf_status_name(s), err.msg, need);
    assert_int_equal(v, 12345); /* untouched on error */
}

static void test_units(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("0"), 0);
    assert_int_equal(parse_ok("24GB"), 24000000000ull);
    assert_int_equal(parse_ok("24 GB"), 24000000000ull);
    assert_int_equal(parse_ok("24gb"), 24000000000ull);
    assert_int_equal(parse_ok("24G"), 24000000000ull);
    assert_int_equal(parse_ok("16GiB"), 16ull << 30);
    assert_int_equal(parse_ok("5gib"), 5ull << 30);
    assert_int_equal(parse_ok("400kB"), 400000);
    assert_int_equal(parse_ok("400KiB"), 409600);
    assert_int_equal(parse_ok("1.5GB"), 1500000000ull);
    assert_int_equal(parse_ok(".5MiB"), 524288);
    assert_int_equal(parse_ok("1e3"), 1000);
    assert_int_equal(parse_ok("2TB"), 2000000000000ull);
    assert_int_equal(parse_ok("1TiB"), 1ull << 40);
    assert_int_equal(parse_ok("123B"), 123);
}

/* A double product rounded these down or overflowed llround (1e19 became 2^63). */
static void test_exact(void **state)
{
    (void)state;
    assert_int_equal(parse_ok("2.01kB"), 2010);
    assert_int_equal(parse_ok("32.3kB"), 32300);
    assert_int_equal(parse_ok("4.06kB"), 4060);
    assert_int_equal(parse_ok("24.3GB"), 24300000000ull);
    assert_int_equal(parse_ok("0.1KiB"), 102); /* 102.4 bytes: whole bytes round down */
    assert_int_equal(parse_ok("9007199254740993"), 9007199254740993ull);
    assert_int_equal(parse_ok("10000000000000000000"), 10000000000000000000ull);
    assert_int_equal(parse_ok("10000000TB"), 10000000000000000000ull);
    assert_int_equal(parse_ok("18446744073709551615"), UINT64_MAX);
    assert_int_equal(parse_ok("1.0000000000000000000001kB"), 1000);
    /* every "i/100 kB" is exactly 10*i bytes */
    for (int i = 1; i < 100000; i += 7) {
        char t[32];
        snprintf(t, sizeof t, "%d.%02dkB", i / 100, i % 100);
        assert_int_equal(parse_ok(t), 10ull * (uint64_t)i);
    }
}

static void test_bad(void **state)
{
    (void)state;
    expect_bad("", "empty");
    expect_bad("abc", "expected a number");
    expect_bad("-5GB", "expected a number");
    expect_bad("nan", "expected a number");
    expect_bad("5XB", "unknown unit");
    expect_bad("1.5", "whole");
    expect_bad("9007199254740993.5", "whole");
    expect_bad("18446744073709551616", "too large");
    expect_bad("18446744073709551615.5", "whole");
    expect_bad("20000000TB", "too large");
    expect_bad("1e30GB", "too large");
    expect_bad("1e19kB", "too large");
}

static void test_format(void **state)
{
    (void)state;
    char b[32];
    rf_format_size(0, b, sizeof b);
    assert_string_equal(b, "0 B");
    rf_format_size(999, b, sizeof b);
    assert_string_equal(b, "999 B");
    rf_format_size(24000000000ull, b, sizeof b);
    assert_string_equal(b, "24.00 GB");
    rf_format_size(UINT64_MAX, b, sizeof b);
    assert_string_equal(b, "18446.74 PB");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_exact),
        cmocka_unit_test(test_bad),
        cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
