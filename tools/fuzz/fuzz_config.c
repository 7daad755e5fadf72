/* libFuzzer harness for the option-table loader oc_config_load: argv is the input split on NULs. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "omnichat/buf.h"
#include "omnichat/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * The input is argv[1..]: the bytes split on NUL ("--fz-int=7\0--fz-bool\0no"). Secret-file
 * values name files in a private temporary directory made once per process (the harness turns
 * "--fz-secret=crlf" into "--fz-secret=<dir>/crlf"); a value containing '/' is not run, so the
 * fuzzer never opens /dev/stdin, a FIFO or anything else outside that directory.
 *
 * Checked: no crash or leak; the result is OC_OK exactly when no problem was listed; on OC_OK
 * every field holds a value its table row allows; no secret file's contents ever appear in the
 * problem list.
 */

typedef struct fz_cfg {
    char *str;
    char *req;
    long long bounded;
    long long any;
    long long neg;
    bool flag;
    char *secret;
    char *secret2;
} fz_cfg_t;

#define MARKER "k7Qx-fuzz-config-secret-9vZ"
#define MAX_ARGS 256

static char dir[256];
static char secret_default[300];

/* Files in the temporary directory: name and contents. */
static const struct {
    const char *name;
    const char *text;
    size_t len;
} files[] = {
    {"secret", MARKER "-plain\n", sizeof(MARKER "-plain\n") - 1},
    {"crlf", MARKER "-crlf\r\n", sizeof(MARKER "-crlf\r\n") - 1},
    {"bare", MARKER "-bare", sizeof(MARKER "-bare") - 1},
    {"short", "abc\n", 4}, /* refused by secret_ok */
    {"empty", "", 0},
    {"nul", MARKER "\0-nul", sizeof(MARKER "\0-nul") - 1},
};
/* What a loaded secret may hold (contents with one trailing newline stripped). */
static const char *const loaded_ok[] = {MARKER "-plain", MARKER "-crlf", MARKER "-bare", "abc"};

static bool no_space(const char *v, char *why, size_t why_len)
{
    if (strchr(v, ' ') == NULL) return true;
    snprintf(why, why_len, "must not contain a space");
    return false;
}

static bool secret_ok(const char *v, char *why, size_t why_len)
{
    if (strlen(v) >= 8) return true;
    snprintf(why, why_len, "must be at least 8 bytes");
    return false;
}

static bool even(const char *v, char *why, size_t why_len)
{
    long long n = strtoll(v, NULL, 10);
    if (n % 2 == 0) return true;
    snprintf(why, why_len, "must be even");
    return false;
}

static oc_config_option_t opts[] = {
    {"fz-str", OC_CFG_STR, "default", 0, 0, 0, offsetof(fz_cfg_t, str), "a string", no_space},
    {"fz-req", OC_CFG_STR, NULL, 0, 0, OC_CFG_REQUIRED, offsetof(fz_cfg_t, req), "required", NULL},
    {"fz-int", OC_CFG_INT, "8", 1, 512, 0, offsetof(fz_cfg_t, bounded), "1..512", NULL},
    {"fz-any", OC_CFG_INT, NULL, 0, 0, 0, offsetof(fz_cfg_t, any), "unbounded", even},
    {"fz-neg", OC_CFG_INT, "-5", -10, -1, 0, offsetof(fz_cfg_t, neg), "-10..-1", NULL},
    {"fz-bool", OC_CFG_BOOL, "false", 0, 0, 0, offsetof(fz_cfg_t, flag), "a bool", NULL},
    {"fz-secret", OC_CFG_SECRET_FILE, secret_default, 0, 0, 0, offsetof(fz_cfg_t, secret),
     "secret file", secret_ok},
    {"fz-secret2", OC_CFG_SECRET_FILE, NULL, 0, 0, 0, offsetof(fz_cfg_t, secret2),
     "optional secret file", NULL},
};
#define NOPTS (sizeof opts / sizeof opts[0])
static const char *const passthrough[] = {"check-config", "--help", NULL};

static void cleanup(void)
{
    char path[400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        unlink(path);
    }
    snprintf(path, sizeof path, "%s/dir", dir);
    rmdir(path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/omnichat-fuzz-config-XXXXXX",
             tmp != NULL && tmp[0] != '\0' && strlen(tmp) < 150 ? tmp : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("fuzz_config: mkdtemp");
        abort();
    }
    atexit(cleanup);
    char path[400];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i].name);
        FILE *f = fopen(path, "wb");
        if (f == NULL || fwrite(files[i].text, 1, files[i].len, f) != files[i].len ||
            fclose(f) != 0) {
            perror("fuzz_config: writing a secret file");
            abort();
        }
    }
    snprintf(path, sizeof path, "%s/dir", dir);
    if (mkdir(path, 0700) != 0) abort();
    snprintf(secret_default, sizeof secret_default, "%s/secret", dir);
    /* Only the flags are fuzzed: the environment must not leak into the runs. */
    static const char *const vars[] = {
        "OMNICHAT_FZ_STR", "OMNICHAT_FZ_REQ",  "OMNICHAT_FZ_INT",    "OMNICHAT_FZ_ANY",
        "OMNICHAT_FZ_NEG", "OMNICHAT_FZ_BOOL", "OMNICHAT_FZ_SECRET", "OMNICHAT_FZ_SECRET2"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        unsetenv(vars[i]);
    return 0;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p == NULL) abort();
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* True for --fz-secret[=v] and --fz-secret2[=v]; *eq points at the '=' or is NULL. */
static bool is_secret_flag(const char *arg, const char **eq)
{
    if (strncmp(arg, "--", 2) != 0) return false;
    const char *name = arg + 2;
    *eq = strchr(name, '=');
    size_t n = *eq != NULL ? (size_t)(*eq - name) : strlen(name);
    return (n == 9 && memcmp(name, "fz-secret", 9) == 0) ||
           (n == 10 && memcmp(name, "fz-secret2", 10) == 0);
}

/* Re-roots a secret-file value in the temporary directory; false when it may not be run. */
static bool reroot(char **slot, size_t prefix_len)
{
    const char *value = *slot + prefix_len;
    if (value[0] == '\0') return true; /* "must be the path of a secret file" */
    if (strchr(value, '/') != NULL) return false;
    size_t n = prefix_len + strlen(dir) + 1 + strlen(value);
    char *p = malloc(n + 1);
    if (p == NULL) abort();
    snprintf(p, n + 1, "%.*s%s/%s", (int)prefix_len, *slot, dir, value);
    free(*slot);
    *slot = p;
    return true;
}

static bool contains(const char *hay, size_t hay_len, const char *needle)
{
    return hay != NULL && memmem(hay, hay_len, needle, strlen(needle)) != NULL;
}

static bool secret_value_ok(const char *v, bool validated)
{
    for (size_t i = 0; i < sizeof loaded_ok / sizeof loaded_ok[0]; i++)
        if (strcmp(v, loaded_ok[i]) == 0) return !validated || strlen(v) >= 8;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    const char *in = (const char *)data;
    bool run = true;

    argv[argc++] = dup_bytes("fuzz_config", 11);
    for (size_t start = 0; start < size;) {
        const char *nul = memchr(in + start, '\0', size - start);
        size_t end = nul != NULL ? (size_t)(nul - in) : size;
        if (argc == MAX_ARGS + 1) {
            run = false;
            break;
        }
        argv[argc++] = dup_bytes(in + start, end - start);
        start = end + 1;
    }
    argv[argc] = NULL;

    /* Secret files: only inside the temporary directory (see the comment at the top). */
    for (int a = 1; run && a < argc; a++) {
        const char *eq;
        if (strcmp(argv[a], "--") == 0) break;
        if (!is_secret_flag(argv[a], &eq)) continue;
        if (eq != NULL)
            run = reroot(&argv[a], (size_t)(eq + 1 - argv[a]));
        else if (a + 1 < argc && strncmp(argv[a + 1], "--", 2) != 0)
            run = reroot(&argv[++a], 0);
    }

    if (run) {
        fz_cfg_t cfg;
        oc_buf_t problems;
        memset(&cfg, 0xA5, sizeof cfg); /* the loader must not trust what it finds */
        oc_buf_init(&problems, 1 << 16);
        oc_err_t rc = oc_config_load(opts, NOPTS, &cfg, argc, argv, passthrough, &problems);

        if (rc == OC_OK) {
            if (problems.len != 0 || problems.failed != OC_OK) abort();
            if (cfg.str == NULL || strchr(cfg.str, ' ') != NULL) abort();
            if (cfg.req == NULL || cfg.req[0] == '\0') abort();
            if (cfg.bounded < 1 || cfg.bounded > 512) abort();
            if (cfg.any % 2 != 0) abort();
            if (cfg.neg < -10 || cfg.neg > -1) abort();
            if (cfg.flag != false && cfg.flag != true) abort();
            if (cfg.secret == NULL || !secret_value_ok(cfg.secret, true)) abort();
            if (cfg.secret2 != NULL && !secret_value_ok(cfg.secret2, false)) abort();
        } else if (rc == OC_E_CONFIG) {
            if (problems.len == 0 && problems.failed == OC_OK) abort();
        } else {
            abort(); /* the table is valid and memory is plentiful */
        }
        /* A secret file's contents never reach the problem list (unless the input had them). */
        if (contains(problems.data, problems.len, MARKER) &&
            memmem(data, size, MARKER, strlen(MARKER)) == NULL)
            abort();
        if (problems.data != NULL && strlen(problems.data) != problems.len) abort();

        oc_buf_dispose(&problems);
        oc_config_free(opts, NOPTS, &cfg);
        if (cfg.str != NULL || cfg.req != NULL || cfg.secret != NULL || cfg.secret2 != NULL)
            abort();
    }
    for (int a = 0; a < argc; a++)
        free(argv[a]);
    return 0;
}
