/* Unit tests for common/src/config.c: precedence, validation with every problem listed, secrets. */
#include <CUnit/Basic.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "omnichat/config.h"
#include "omnichat/util.h"

#include "test_main.h"

typedef struct test_cfg {
    char *listen;
    long long workers;
    bool tls;
    char *key;
    char *dsn;
    char *mode;
    long long anyint;
} test_cfg_t;

static bool mode_ok(const char *v, char *why, size_t why_len)
{
    if (strcmp(v, "normal") == 0 || strcmp(v, "safe") == 0) return true;
    snprintf(why, why_len, "must be normal or safe");
    return false;
}

static bool key_len_ok(const char *v, char *why, size_t why_len)
{
    if (strlen(v) >= 8) return true;
    snprintf(why, why_len, "must be at least 8 bytes");
    return false;
}

static const oc_config_option_t opts[] = {
    {"grpc-listen", OC_CFG_STR, "0.0.0.0:50051", 0, 0, 0, offsetof(test_cfg_t, listen),
     "gRPC listen address", NULL},
    {"grpc-workers", OC_CFG_INT, "8", 1, 512, 0, offsetof(test_cfg_t, workers), "worker threads",
     NULL},
    {"tls", OC_CFG_BOOL, "false", 0, 0, 0, offsetof(test_cfg_t, tls), "serve TLS", NULL},
    {"vault-key-file", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, offsetof(test_cfg_t, key),
     "file holding the vault key", key_len_ok},
    {"database-url", OC_CFG_STR, NULL, 0, 0, OC_CFG_REQUIRED, offsetof(test_cfg_t, dsn),
     "PostgreSQL connection string", NULL},
    {"mode", OC_CFG_STR, "normal", 0, 0, 0, offsetof(test_cfg_t, mode), "mode", mode_ok},
    {"any-int", OC_CFG_INT, NULL, 0, 0, 0, offsetof(test_cfg_t, anyint), "unbounded", NULL},
};
#define NOPTS (sizeof opts / sizeof opts[0])

static const char *const passthrough[] = {"check-config", "help", NULL};
static char tmpdir[64];

static void clear_env(void)
{
    static const char *const vars[] = {"OMNICHAT_GRPC_LISTEN",  "OMNICHAT_GRPC_WORKERS",
                                       "OMNICHAT_TLS",          "OMNICHAT_VAULT_KEY_FILE",
                                       "OMNICHAT_DATABASE_URL", "OMNICHAT_MODE",
                                       "OMNICHAT_ANY_INT"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
}

/* Loads with argv = {"prog", args...}; problems stay in *pb for the caller to inspect. */
static oc_err_t load(test_cfg_t *c, oc_buf_t *pb, int argc, const char **args)
{
    char *argv[32];
    argv[0] = "prog";
    for (int i = 0; i < argc; i++)
        argv[i + 1] = (char *)args[i];
    argv[argc + 1] = NULL;
    memset(c, 0xA5, sizeof *c); /* the loader must not trust what it finds */
    oc_buf_init(pb, 1 << 16);
    oc_buf_appends(pb, ""); /* so pb->data is a string even with no problem */
    return oc_config_load(opts, NOPTS, c, argc + 1, argv, passthrough, pb);
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static const char *write_tmp(const char *name, const char *data, size_t n)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, data, n) == (ssize_t)n);
    close(fd);
    return path;
}

static void test_defaults(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    const char *a[] = {"--database-url=postgres://x"};
    CU_ASSERT_EQUAL(load(&c, &pb, 1, a), OC_OK);
    CU_ASSERT_STRING_EQUAL(pb.data, "");
    CU_ASSERT_STRING_EQUAL(c.listen, "0.0.0.0:50051");
    CU_ASSERT_EQUAL(c.workers, 8);
    CU_ASSERT_FALSE(c.tls);
    CU_ASSERT_PTR_NULL(c.key); /* no default: stays NULL */
    CU_ASSERT_STRING_EQUAL(c.dsn, "postgres://x");
    CU_ASSERT_STRING_EQUAL(c.mode, "normal");
    CU_ASSERT_EQUAL(c.anyint, 0);
    oc_config_free(opts, NOPTS, &c);
    CU_ASSERT_PTR_NULL(c.listen);
    CU_ASSERT_PTR_NULL(c.dsn);
    oc_buf_dispose(&pb);
}

static void test_precedence(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    setenv("OMNICHAT_DATABASE_URL", "env-dsn", 1);
    setenv("OMNICHAT_GRPC_WORKERS", "16", 1);
    setenv("OMNICHAT_GRPC_LISTEN", "127.0.0.1:1", 1);
    setenv("OMNICHAT_ANY_INT", "-5", 1);

    /* env beats default */
    CU_ASSERT_EQUAL(load(&c, &pb, 0, NULL), OC_OK);
    CU_ASSERT_EQUAL(c.workers, 16);
    CU_ASSERT_STRING_EQUAL(c.listen, "127.0.0.1:1");
    CU_ASSERT_STRING_EQUAL(c.dsn, "env-dsn");
    CU_ASSERT_EQUAL(c.anyint, -5);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    /* flag beats env, in both spellings; the last repetition wins */
    const char *a[] = {"--grpc-workers", "32", "--grpc-listen=[::]:9", "--grpc-workers=64"};
    CU_ASSERT_EQUAL(load(&c, &pb, 4, a), OC_OK);
    CU_ASSERT_STRING_EQUAL(pb.data, "");
    CU_ASSERT_EQUAL(c.workers, 64);
    CU_ASSERT_STRING_EQUAL(c.listen, "[::]:9");
    CU_ASSERT_STRING_EQUAL(c.dsn, "env-dsn");
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    /* an empty variable counts as unset: the default applies */
    setenv("OMNICHAT_GRPC_WORKERS", "", 1);
    CU_ASSERT_EQUAL(load(&c, &pb, 0, NULL), OC_OK);
    CU_ASSERT_EQUAL(c.workers, 8);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    clear_env();
}

static void test_all_problems_listed(void)
{
    clear_env();
    setenv("OMNICHAT_TLS", "maybe", 1);
    test_cfg_t c;
    oc_buf_t pb;
    const char *a[] = {"--grpc-workers=0", "--mode=fast", "--unknown=1", "--bogus", "--any-int=1x"};
    CU_ASSERT_EQUAL(load(&c, &pb, 5, a), OC_E_CONFIG);
    /* one line per problem, all of them */
    CU_ASSERT_EQUAL(count_lines(pb.data), 7);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--grpc-workers: must be between 1 and 512\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "OMNICHAT_TLS: must be true or false"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--mode: must be normal or safe\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--unknown: unknown option\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--bogus: unknown option\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--any-int: must be an integer"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--database-url: required"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "OMNICHAT_DATABASE_URL"));
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    clear_env();
}

static void test_int_parsing(void)
{
    clear_env();
    static const char *const bad[] = {"--grpc-workers=12abc",
                                      "--grpc-workers= 12",
                                      "--grpc-workers=",
                                      "--grpc-workers=0x10",
                                      "--grpc-workers=99999999999999999999",
                                      "--grpc-workers=513",
                                      "--grpc-workers=-1"};
    test_cfg_t c;
    oc_buf_t pb;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *a[] = {"--database-url=x", bad[i]};
        CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_E_CONFIG);
        CU_ASSERT_EQUAL(count_lines(pb.data), 1);
        CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--grpc-workers: "));
        oc_config_free(opts, NOPTS, &c);
        oc_buf_dispose(&pb);
    }
    const char *a[] = {"--database-url=x", "--grpc-workers=512", "--any-int=-9223372036854775808"};
    CU_ASSERT_EQUAL(load(&c, &pb, 3, a), OC_OK);
    CU_ASSERT_EQUAL(c.workers, 512);
    CU_ASSERT_EQUAL(c.anyint, -9223372036854775807LL - 1);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
}

static void test_bool_and_args(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    /* a bare boolean flag means true; positional words and passthrough flags are left alone */
    const char *a1[] = {"serve",  "--tls", "positional",     "--check-config",
                        "--help", "-v",    "--database-url", "x"};
    CU_ASSERT_EQUAL(load(&c, &pb, 8, a1), OC_OK);
    CU_ASSERT_STRING_EQUAL(pb.data, "");
    CU_ASSERT(c.tls);
    CU_ASSERT_STRING_EQUAL(c.dsn, "x");
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    /* "--tls false" must not mean true */
    setenv("OMNICHAT_TLS", "yes", 1);
    const char *a2[] = {"--tls", "false", "--database-url=x"};
    CU_ASSERT_EQUAL(load(&c, &pb, 3, a2), OC_OK);
    CU_ASSERT_FALSE(c.tls);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    const char *a3[] = {"--tls=OFF", "--database-url=x"};
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a3), OC_OK);
    CU_ASSERT_FALSE(c.tls);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    CU_ASSERT_EQUAL(load(&c, &pb, 1, (const char *[]){"--database-url=x"}), OC_OK);
    CU_ASSERT(c.tls); /* from the environment */
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    clear_env();

    /* "--" ends the options: what follows is not parsed */
    const char *a4[] = {"--database-url=x", "--", "--unknown", "--grpc-workers=0"};
    CU_ASSERT_EQUAL(load(&c, &pb, 4, a4), OC_OK);
    CU_ASSERT_EQUAL(c.workers, 8);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
}

static void test_missing_values(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    const char *a[] = {"--database-url=x", "--mode", "--tls", "--grpc-listen"};
    CU_ASSERT_EQUAL(load(&c, &pb, 4, a), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--mode: missing value\n"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--grpc-listen: missing value\n"));
    CU_ASSERT_EQUAL(count_lines(pb.data), 2);
    CU_ASSERT(c.tls);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    /* a required option given as empty is a problem too */
    const char *b[] = {"--database-url="};
    CU_ASSERT_EQUAL(load(&c, &pb, 1, b), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--database-url: must not be empty"));
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
}

static void test_secret_file(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    char arg[256];
    const char *p = write_tmp("key", "TOPSECRETVALUE\n", 15);
    snprintf(arg, sizeof arg, "--vault-key-file=%s", p);
    const char *a[] = {"--database-url=x", arg};
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_OK);
    CU_ASSERT_PTR_NOT_NULL_FATAL(c.key);
    CU_ASSERT_STRING_EQUAL(c.key, "TOPSECRETVALUE"); /* newline stripped */
    oc_config_free(opts, NOPTS, &c);
    CU_ASSERT_PTR_NULL(c.key);
    oc_buf_dispose(&pb);

    /* from the environment too */
    setenv("OMNICHAT_VAULT_KEY_FILE", p, 1);
    CU_ASSERT_EQUAL(load(&c, &pb, 1, a), OC_OK);
    CU_ASSERT_STRING_EQUAL(c.key, "TOPSECRETVALUE");
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    clear_env();

    /* the validator refuses a short secret: the reason is printed, the secret is not */
    p = write_tmp("short", "SHHH\n", 5);
    snprintf(arg, sizeof arg, "--vault-key-file=%s", p);
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "must be at least 8 bytes"));
    CU_ASSERT_PTR_NULL(strstr(pb.data, "SHHH"));
    CU_ASSERT_PTR_NULL(c.key);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    /* missing, empty and oversized files are problems naming the path */
    snprintf(arg, sizeof arg, "--vault-key-file=%s/absent", tmpdir);
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "--vault-key-file: could not read secret file"));
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "absent"));
    CU_ASSERT_EQUAL(count_lines(pb.data), 1);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    p = write_tmp("empty", "\n", 1);
    snprintf(arg, sizeof arg, "--vault-key-file=%s", p);
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "is empty"));
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);

    enum { BIG = 64 * 1024 + 1 };
    char *big = malloc(BIG);
    memset(big, 'K', BIG);
    p = write_tmp("big", big, BIG);
    free(big);
    snprintf(arg, sizeof arg, "--vault-key-file=%s", p);
    CU_ASSERT_EQUAL(load(&c, &pb, 2, a), OC_E_CONFIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(pb.data, "larger than 65536 bytes"));
    CU_ASSERT_PTR_NULL(strstr(pb.data, "KKKK"));
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
}

static char *capture_usage(void)
{
    char path[128];
    snprintf(path, sizeof path, "%s/usage", tmpdir);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDOUT_FILENO);
    close(fd);
    oc_config_usage(opts, NOPTS, "omnichat-persistence");
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    char *out = NULL;
    size_t len;
    oc_error_t err;
    oc_error_clear(&err);
    oc_read_file(path, 1 << 20, false, &out, &len, &err);
    return out;
}

static void test_usage(void)
{
    clear_env();
    test_cfg_t c;
    oc_buf_t pb;
    char arg[256];
    const char *p = write_tmp("key", "TOPSECRETVALUE\n", 15);
    snprintf(arg, sizeof arg, "--vault-key-file=%s", p);
    setenv("OMNICHAT_DATABASE_URL", "x", 1);
    CU_ASSERT_EQUAL(load(&c, &pb, 1, (const char *[]){arg}), OC_OK);

    char *u = capture_usage();
    CU_ASSERT_PTR_NOT_NULL_FATAL(u);
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "omnichat-persistence"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "--grpc-workers=<int>"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "OMNICHAT_GRPC_WORKERS"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "(default: 8)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "[1..512]"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "OMNICHAT_VAULT_KEY_FILE"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "(required)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(u, "worker threads"));
    CU_ASSERT_PTR_NULL(strstr(u, "TOPSECRETVALUE"));
    /* one line per option plus the header lines; columns aligned: every option line has its
     * environment variable at the same column */
    int lines = 0;
    long col = -1;
    bool aligned = true;
    for (char *line = strtok(u, "\n"); line != NULL; line = strtok(NULL, "\n")) {
        char *e = strstr(line, "OMNICHAT_");
        if (e == NULL) continue;
        lines++;
        if (col < 0) col = e - line;
        aligned &= (e - line) == col;
    }
    CU_ASSERT_EQUAL(lines, (int)NOPTS);
    CU_ASSERT(aligned);
    free(u);
    oc_config_free(opts, NOPTS, &c);
    oc_buf_dispose(&pb);
    clear_env();
}

static void test_problems_may_be_null(void)
{
    clear_env();
    test_cfg_t c;
    char *argv[] = {"prog", "--grpc-workers=0", NULL};
    CU_ASSERT_EQUAL(oc_config_load(opts, NOPTS, &c, 2, argv, NULL, NULL), OC_E_CONFIG);
    oc_config_free(opts, NOPTS, &c);
}

static int suite_init(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/oc_test_config.XXXXXX");
    return mkdtemp(tmpdir) == NULL ? -1 : 0;
}

static int suite_clean(void)
{
    static const char *const names[] = {"key", "short", "empty", "big", "usage"};
    char path[128];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", tmpdir, names[i]);
        unlink(path);
    }
    rmdir(tmpdir);
    return 0;
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 2;
    CU_pSuite s = CU_add_suite("config", suite_init, suite_clean);
    CU_add_test(s, "defaults", test_defaults);
    CU_add_test(s, "precedence", test_precedence);
    CU_add_test(s, "all problems listed", test_all_problems_listed);
    CU_add_test(s, "int parsing and bounds", test_int_parsing);
    CU_add_test(s, "bool flags and other arguments", test_bool_and_args);
    CU_add_test(s, "missing values", test_missing_values);
    CU_add_test(s, "secret file", test_secret_file);
    CU_add_test(s, "usage", test_usage);
    CU_add_test(s, "NULL problems buffer", test_problems_may_be_null);
    int failed = oc_test_run();
    return failed == 0 ? 0 : 1;
}
