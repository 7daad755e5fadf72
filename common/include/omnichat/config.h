/* One declarative table of options, read from OMNICHAT_* environment variables and --flags. */
#ifndef OMNICHAT_CONFIG_H
#define OMNICHAT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "omnichat/buf.h"
#include "omnichat/err.h"

typedef enum oc_cfg_type {
    OC_CFG_STR,        /* char * (heap copy, owned by the config; free with oc_config_free) */
    OC_CFG_INT,        /* long long, checked against [min, max] */
    OC_CFG_BOOL,       /* bool: true/false/1/0/yes/no/on/off */
    OC_CFG_SECRET_FILE /* char *: a path; the file's contents (trailing newline stripped) are
                          read into the field, in oc_secret_alloc memory (left out of core
                          dumps), wiped on free. The value is never printed. */
} oc_cfg_type_t;

#define OC_CFG_REQUIRED 0x1u

/*
 * One option. `name` is the flag without dashes ("grpc-listen"); the environment variable is
 * OMNICHAT_ + upper-case name with '-' turned into '_' (OMNICHAT_GRPC_LISTEN). A flag wins over
 * the environment, which wins over the default. `offset` is offsetof(your_struct, field).
 * `validate` (optional) returns false and writes a reason into `why` to refuse a value.
 */
typedef struct oc_config_option {
    const char *name;
    oc_cfg_type_t type;
    const char *default_value; /* NULL: no default (the field stays NULL/0/false) */
    long long min, max;        /* OC_CFG_INT only */
    unsigned flags;
    size_t offset;
    const char *help;
    bool (*validate)(const char *value, char *why, size_t why_len);
} oc_config_option_t;

/*
 * Fills `cfg` from the table. argv is scanned for --name=value and --name value; other
 * arguments (positional words and the flags listed in `passthrough`, e.g. "check-config",
 * "help") are left alone. Every problem is appended, one per line ("--grpc-workers: must be
 * between 1 and 512"), to `problems`; the return is OC_OK when there is none, OC_E_CONFIG
 * otherwise. Unknown --flags are problems. Not thread-safe; call from main.
 */
oc_err_t oc_config_load(const oc_config_option_t *opts, size_t nopts, void *cfg, int argc,
                        char **argv, const char *const *passthrough, oc_buf_t *problems);

/* Frees the strings the table owns in cfg (secrets are wiped first). */
void oc_config_free(const oc_config_option_t *opts, size_t nopts, void *cfg);

/* Prints "--name  OMNICHAT_NAME  (default)  help" lines for --help to stdout. */
void oc_config_usage(const oc_config_option_t *opts, size_t nopts, const char *program);

#endif
