/* Declarative option table: --flags over OMNICHAT_* environment over defaults, all validated. */
#include "omnichat/config.h"

#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "omnichat/util.h"

#define CFG_SECRET_MAX (64 * 1024)
#define CFG_NAME_MAX 96

typedef enum src { SRC_NONE, SRC_DEFAULT, SRC_ENV, SRC_FLAG } src_t;

/* Where an option's value came from: the source name goes into every problem line. */
typedef struct pick {
    src_t src;
    const char *value;
} pick_t;

static void *field_at(void *cfg, const oc_config_option_t *o)
{
    return (char *)cfg + o->offset;
}

static bool is_string_type(oc_cfg_type_t t)
{
    return t == OC_CFG_STR || t == OC_CFG_SECRET_FILE;
}

/* OMNICHAT_ + upper-case name with '-' as '_'; false when the name is too long or odd. */
static bool env_name(const char *name, char *out, size_t cap)
{
    static const char prefix[] = "OMNICHAT_";
    size_t n = strlen(name);
    if (n == 0 || sizeof prefix + n > cap) return false;
    memcpy(out, prefix, sizeof prefix - 1);
    char *p = out + sizeof prefix - 1;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        else if (c == '-')
            c = '_';
        *p++ = c;
    }
    *p = '\0';
    return true;
}

static const oc_config_option_t *find_opt(const oc_config_option_t *opts, size_t nopts,
                                          const char *name, size_t name_len, size_t *idx)
{
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].name != NULL && strlen(opts[i].name) == name_len &&
            memcmp(opts[i].name, name, name_len) == 0) {
            *idx = i;
            return &opts[i];
        }
    }
    return NULL;
}

static bool is_passthrough(const char *const *pt, const char *name, size_t name_len)
{
    for (; pt != NULL && *pt != NULL; pt++) {
        const char *p = *pt;
        if (p[0] == '-' && p[1] == '-') p += 2; /* accept "help" and "--help" alike */
        if (strlen(p) == name_len && memcmp(p, name, name_len) == 0) return true;
    }
    return false;
}

static int parse_bool(const char *s)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) return 1;
        if (strcasecmp(s, no[i]) == 0) return 0;
    }
    return -1;
}

/* Strict base-10: the whole string, no leading blanks, no overflow. */
static bool parse_ll(const char *s, long long *out)
{
    if (s[0] == '\0' || !((s[0] >= '0' && s[0] <= '9') || s[0] == '-' || s[0] == '+')) return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0' || end == s) return false;
    *out = v;
    return true;
}

static void problem(oc_buf_t *problems, const char *who, const char *what)
{
    if (problems == NULL) return;
    oc_buf_appendf(problems, "%s: %s\n", who, what);
}

/* The label a problem line starts with: the flag, or the variable it was read from. */
static void label_of(const oc_config_option_t *o, const pick_t *pk, char *out, size_t cap)
{
    if (pk->src == SRC_ENV) {
        if (env_name(o->name, out, cap)) return;
    }
    snprintf(out, cap, "--%s", o->name);
}

/* Applies one value to its field; returns false after recording a problem. */
static bool apply(const oc_config_option_t *o, const pick_t *pk, void *cfg, oc_buf_t *problems)
{
    char who[CFG_NAME_MAX + 16], why[256], msg[512];
    label_of(o, pk, who, sizeof who);
    const char *v = pk->value;
    why[0] = '\0';

    switch (o->type) {
    case OC_CFG_STR: {
        if ((o->flags & OC_CFG_REQUIRED) && v[0] == '\0') {
            problem(problems, who, "must not be empty");
            return false;
        }
        if (o->validate != NULL && !o->validate(v, why, sizeof why)) {
            snprintf(msg, sizeof msg, "%s", why[0] ? why : "invalid value");
            problem(problems, who, msg);
            return false;
        }
        char *copy = strdup(v);
        if (copy == NULL) {
            problem(problems, who, "out of memory");
            return false;
        }
        *(char **)field_at(cfg, o) = copy;
        return true;
    }
    case OC_CFG_INT: {
        long long n;
        if (!parse_ll(v, &n)) {
            snprintf(msg, sizeof msg, "must be an integer, not \"%.64s\"", v);
            problem(problems, who, msg);
            return false;
        }
        /* min == max == 0 means the table gave no bounds */
        if ((o->min != 0 || o->max != 0) && (n < o->min || n > o->max)) {
            snprintf(msg, sizeof msg, "must be between %lld and %lld", o->min, o->max);
            problem(problems, who, msg);
            return false;
        }
        if (o->validate != NULL && !o->validate(v, why, sizeof why)) {
            snprintf(msg, sizeof msg, "%s", why[0] ? why : "invalid value");
            problem(problems, who, msg);
            return false;
        }
        *(long long *)field_at(cfg, o) = n;
        return true;
    }
    case OC_CFG_BOOL: {
        int b = parse_bool(v);
        if (b < 0) {
            snprintf(msg, sizeof msg, "must be true or false, not \"%.64s\"", v);
            problem(problems, who, msg);
            return false;
        }
        if (o->validate != NULL && !o->validate(v, why, sizeof why)) {
            snprintf(msg, sizeof msg, "%s", why[0] ? why : "invalid value");
            problem(problems, who, msg);
            return false;
        }
        *(bool *)field_at(cfg, o) = b == 1;
        return true;
    }
    case OC_CFG_SECRET_FILE: {
        if (v[0] == '\0') {
            problem(problems, who, "must be the path of a secret file");
            return false;
        }
        char *secret = NULL;
        size_t len = 0;
        oc_error_t err;
        oc_error_clear(&err);
        oc_err_t e = oc_read_file(v, CFG_SECRET_MAX, true, &secret, &len, &err);
        if (e != OC_OK) {
            /* err.msg names the path and the errno text, never the contents */
            snprintf(msg, sizeof msg, "could not read secret file: %s", err.msg);
            problem(problems, who, msg);
            return false;
        }
        bool ok = true;
        if (len == 0) {
            snprintf(msg, sizeof msg, "secret file \"%.200s\" is empty", v);
            ok = false;
        } else if (memchr(secret, '\0', len) != NULL) {
            snprintf(msg, sizeof msg, "secret file \"%.200s\" contains a NUL byte", v);
            ok = false;
        } else if (o->validate != NULL && !o->validate(secret, why, sizeof why)) {
            /* the validator sees the secret; only its reason is printed */
            snprintf(msg, sizeof msg, "secret file \"%.200s\": %s", v,
                     why[0] ? why : "invalid secret");
            ok = false;
        }
        if (!ok) {
            OPENSSL_cleanse(secret, len);
            free(secret);
            problem(problems, who, msg);
            return false;
        }
        /* Kept for the process lifetime: move it to pages left out of core dumps. */
        char *kept = oc_secret_strndup(secret, len);
        OPENSSL_cleanse(secret, len);
        free(secret);
        if (kept == NULL) {
            problem(problems, who, "out of memory");
            return false;
        }
        *(char **)field_at(cfg, o) = kept;
        return true;
    }
    }
    problem(problems, who, "option table: unknown type");
    return false;
}

/* Zeroes every field so a failed load can always be passed to oc_config_free. */
static void clear_fields(const oc_config_option_t *opts, size_t nopts, void *cfg)
{
    for (size_t i = 0; i < nopts; i++) {
        switch (opts[i].type) {
        case OC_CFG_STR:
        case OC_CFG_SECRET_FILE:
            *(char **)field_at(cfg, &opts[i]) = NULL;
            break;
        case OC_CFG_INT:
            *(long long *)field_at(cfg, &opts[i]) = 0;
            break;
        case OC_CFG_BOOL:
            *(bool *)field_at(cfg, &opts[i]) = false;
            break;
        }
    }
}

oc_err_t oc_config_load(const oc_config_option_t *opts, size_t nopts, void *cfg, int argc,
                        char **argv, const char *const *passthrough, oc_buf_t *problems)
{
    size_t nproblems = 0;
    pick_t *picks = NULL;
    char who[CFG_NAME_MAX + 16], msg[512];
    oc_err_t rc = OC_OK;

    for (size_t i = 0; i < nopts; i++) {
        char env[CFG_NAME_MAX];
        const oc_config_option_t *o = &opts[i];
        if (o->name == NULL || !env_name(o->name, env, sizeof env) ||
            (unsigned)o->type > (unsigned)OC_CFG_SECRET_FILE) {
            snprintf(msg, sizeof msg, "entry %zu has a missing, too long or odd name or type", i);
            problem(problems, "option table", msg);
            return OC_E_CONFIG; /* nothing else can be trusted */
        }
    }
    clear_fields(opts, nopts, cfg);
    if (nopts > 0) {
        picks = calloc(nopts, sizeof *picks);
        if (picks == NULL) {
            problem(problems, "config", "out of memory");
            return OC_E_NOMEM;
        }
    }

    /* Defaults, then the environment. An empty variable counts as unset: deployment
     * templates render missing values as empty strings. */
    for (size_t i = 0; i < nopts; i++) {
        char env[CFG_NAME_MAX];
        env_name(opts[i].name, env, sizeof env);
        if (opts[i].default_value != NULL) picks[i] = (pick_t){SRC_DEFAULT, opts[i].default_value};
        const char *ev = getenv(env);
        if (ev != NULL && ev[0] != '\0') picks[i] = (pick_t){SRC_ENV, ev};
    }

    /* Flags; a later repetition wins. "--" ends the options. */
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (arg == NULL) break;
        if (strcmp(arg, "--") == 0) break;
        if (arg[0] != '-' || arg[1] != '-') continue; /* positional or a short flag */
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        if (is_passthrough(passthrough, name, name_len)) continue;
        size_t idx;
        const oc_config_option_t *o = find_opt(opts, nopts, name, name_len, &idx);
        if (o == NULL) {
            snprintf(who, sizeof who, "--%.*s", (int)(name_len > 64 ? 64 : name_len), name);
            problem(problems, who, "unknown option");
            nproblems++;
            continue;
        }
        const char *value = NULL;
        if (eq != NULL) {
            value = eq + 1;
        } else if (o->type == OC_CFG_BOOL) {
            /* "--tls" alone means true; "--tls false" must not silently mean true */
            if (a + 1 < argc && argv[a + 1] != NULL && parse_bool(argv[a + 1]) >= 0)
                value = argv[++a];
            else
                value = "true";
        } else if (a + 1 < argc && argv[a + 1] != NULL &&
                   !(argv[a + 1][0] == '-' && argv[a + 1][1] == '-')) {
            value = argv[++a];
        } else {
            snprintf(who, sizeof who, "--%s", o->name);
            problem(problems, who, "missing value");
            nproblems++;
            continue;
        }
        picks[idx] = (pick_t){SRC_FLAG, value};
    }

    for (size_t i = 0; i < nopts; i++) {
        const oc_config_option_t *o = &opts[i];
        if (picks[i].src == SRC_NONE) {
            if (o->flags & OC_CFG_REQUIRED) {
                char env[CFG_NAME_MAX];
                env_name(o->name, env, sizeof env);
                snprintf(who, sizeof who, "--%s", o->name);
                snprintf(msg, sizeof msg, "required (set --%s or %s)", o->name, env);
                problem(problems, who, msg);
                nproblems++;
            }
            continue;
        }
        if (!apply(o, &picks[i], cfg, problems)) nproblems++;
    }

    if (nproblems > 0) rc = OC_E_CONFIG;
    free(picks);
    return rc;
}

void oc_config_free(const oc_config_option_t *opts, size_t nopts, void *cfg)
{
    if (opts == NULL || cfg == NULL) return;
    for (size_t i = 0; i < nopts; i++) {
        if (!is_string_type(opts[i].type)) continue;
        char **p = (char **)field_at(cfg, &opts[i]);
        if (opts[i].type == OC_CFG_SECRET_FILE)
            oc_secret_free(*p); /* wipes */
        else
            free(*p);
        *p = NULL;
    }
}

static const char *type_hint(oc_cfg_type_t t)
{
    switch (t) {
    case OC_CFG_STR:
        return "=<str>";
    case OC_CFG_INT:
        return "=<int>";
    case OC_CFG_BOOL:
        return "[=<bool>]";
    case OC_CFG_SECRET_FILE:
        return "=<file>";
    }
    return "";
}

void oc_config_usage(const oc_config_option_t *opts, size_t nopts, const char *program)
{
    size_t wflag = 0, wenv = 0, wdef = 0;
    char flag[CFG_NAME_MAX + 16], env[CFG_NAME_MAX], def[128];

    /* Two passes: measure the columns, then print them aligned. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1)
            printf("Usage: %s [options]\n\nOptions (a flag wins over the environment, which wins "
                   "over the default):\n",
                   program != NULL ? program : "omnichat");
        for (size_t i = 0; i < nopts; i++) {
            const oc_config_option_t *o = &opts[i];
            if (o->name == NULL) continue;
            snprintf(flag, sizeof flag, "--%s%s", o->name, type_hint(o->type));
            if (!env_name(o->name, env, sizeof env)) env[0] = '\0';
            /* A secret option's default is a path, never the secret itself. */
            if (o->flags & OC_CFG_REQUIRED)
                snprintf(def, sizeof def, "(required)");
            else if (o->default_value != NULL)
                snprintf(def, sizeof def, "(default: %.100s)", o->default_value);
            else
                snprintf(def, sizeof def, "(no default)");
            if (pass == 0) {
                if (strlen(flag) > wflag) wflag = strlen(flag);
                if (strlen(env) > wenv) wenv = strlen(env);
                if (strlen(def) > wdef) wdef = strlen(def);
                continue;
            }
            printf("  %-*s  %-*s  %-*s  %s", (int)wflag, flag, (int)wenv, env, (int)wdef, def,
                   o->help != NULL ? o->help : "");
            if (o->type == OC_CFG_INT && (o->min != 0 || o->max != 0))
                printf(" [%lld..%lld]", o->min, o->max);
            if (o->type == OC_CFG_SECRET_FILE) printf(" (file contents are secret)");
            printf("\n");
        }
    }
    fflush(stdout);
}
