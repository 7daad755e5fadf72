/* Small helpers: UUIDs, base64/hex, UTF-8 checks and counts, JSON validity, clocks, files. */
#include "omnichat/util.h"

#include "omnichat/json_lenient.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- random bytes for identifiers ---- */

/*
 * RAND_bytes costs some 7,000 instructions a call in OpenSSL 3 whatever the size (locking, the
 * provider's DRBG); a call makes several ids. Each thread takes them from its own block of
 * RAND_bytes output. A forked child must not hand out its parent's remaining bytes: the fork
 * generation empties every block. Not for keys or nonces (they stay in memory until used).
 */
#define ID_RANDOM_BLOCK 512
static _Atomic unsigned id_random_gen = 1;
static pthread_once_t id_random_once = PTHREAD_ONCE_INIT;
static _Thread_local struct {
    unsigned gen;
    size_t pos;
    uint8_t b[ID_RANDOM_BLOCK];
} id_random;

static void id_random_forked(void)
{
    atomic_fetch_add_explicit(&id_random_gen, 1, memory_order_relaxed);
}

static void id_random_init(void)
{
    pthread_atfork(NULL, NULL, id_random_forked);
}

oc_err_t oc_random_id_bytes(void *out, size_t n)
{
    unsigned gen;

    pthread_once(&id_random_once, id_random_init);
    gen = atomic_load_explicit(&id_random_gen, memory_order_relaxed);
    if (n > ID_RANDOM_BLOCK) return RAND_bytes(out, (int)n) == 1 ? OC_OK : OC_E_INTERNAL;
    if (id_random.gen != gen || ID_RANDOM_BLOCK - id_random.pos < n) {
        if (RAND_bytes(id_random.b, ID_RANDOM_BLOCK) != 1) return OC_E_INTERNAL;
        id_random.gen = gen;
        id_random.pos = 0;
    }
    memcpy(out, id_random.b + id_random.pos, n);
    /* Handed out once: never again from this block. */
    memset(id_random.b + id_random.pos, 0, n);
    id_random.pos += n;
    return OC_OK;
}

/* ---- UUIDs ---- */

oc_err_t oc_uuid_v4(char out[OC_UUID_STR_LEN + 1])
{
    uint8_t b[16];
    if (oc_random_id_bytes(b, sizeof b) != OC_OK) {
        out[0] = '\0';
        return OC_E_INTERNAL;
    }
    b[6] = (uint8_t)((b[6] & 0x0F) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);
    oc_uuid_format(b, out);
    return OC_OK;
}

/*
 * Last (unix_ms << 12 | rand_a) handed out by this process. rand_a starts random in each new
 * millisecond (its top bit clear, leaving room to count) and is incremented when two ids fall
 * in the same millisecond, so ids from one process are strictly increasing (RFC 9562 §6.2,
 * method 1) while still carrying 62 random bits in rand_b. A CAS keeps it lock-free.
 */
static _Atomic uint64_t uuid_v7_last;

oc_err_t oc_uuid_v7(char out[OC_UUID_STR_LEN + 1])
{
    uint8_t b[16];
    if (oc_random_id_bytes(b, sizeof b) != OC_OK) {
        out[0] = '\0';
        return OC_E_INTERNAL;
    }
    uint64_t ms = (uint64_t)oc_now_ms() & 0xFFFFFFFFFFFFull;
    uint64_t seq = ((uint64_t)(b[6] & 0x07) << 8) | b[7];
    uint64_t cand = (ms << 12) | seq;
    uint64_t last = atomic_load_explicit(&uuid_v7_last, memory_order_relaxed);
    uint64_t next;
    do {
        /* The clock stepping back (or a burst overflowing 12 bits) keeps counting from the
         * last id, borrowing from the timestamp; it catches up with the clock afterwards. */
        next = cand > last ? cand : last + 1;
    } while (!atomic_compare_exchange_weak_explicit(&uuid_v7_last, &last, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    ms = (next >> 12) & 0xFFFFFFFFFFFFull;
    seq = next & 0xFFF;
    for (int i = 0; i < 6; i++)
        b[i] = (uint8_t)(ms >> (8 * (5 - i)));
    b[6] = (uint8_t)(0x70 | (seq >> 8));
    b[7] = (uint8_t)(seq & 0xFF);
    b[8] = (uint8_t)((b[8] & 0x3F) | 0x80);
    oc_uuid_format(b, out);
    return OC_OK;
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool oc_uuid_parse(const char *s, uint8_t out[16])
{
    if (s == NULL) return false;
    uint8_t tmp[16];
    size_t j = 0;
    bool lower = false, upper = false;
    for (size_t i = 0; i < OC_UUID_STR_LEN; i++) {
        unsigned char c = (unsigned char)s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
            continue;
        }
        int hi = hex_val(c);
        if (hi < 0) return false;
        i++;
        int lo = hex_val((unsigned char)s[i]);
        if (lo < 0) return false;
        /* canonical: letters all lowercase or all uppercase */
        lower |= (c >= 'a' && c <= 'f') || (s[i] >= 'a' && s[i] <= 'f');
        upper |= (c >= 'A' && c <= 'F') || (s[i] >= 'A' && s[i] <= 'F');
        if (lower && upper) return false;
        tmp[j++] = (uint8_t)(hi << 4 | lo);
    }
    if (s[OC_UUID_STR_LEN] != '\0') return false;
    if (out != NULL) memcpy(out, tmp, sizeof tmp);
    return true;
}

bool oc_uuid_valid(const char *s)
{
    return oc_uuid_parse(s, NULL);
}

void oc_uuid_format(const uint8_t in[16], char out[OC_UUID_STR_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = hex[in[i] >> 4];
        out[o++] = hex[in[i] & 0x0F];
    }
    out[o] = '\0';
}

/* ---- base64 ---- */

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char b64_url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t oc_base64_encoded_len(size_t n)
{
    return n / 3 * 4 + (n % 3 ? 4 : 0);
}

static size_t b64_encode(const char *alpha, bool pad, const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        out[o++] = alpha[v >> 6 & 63];
        out[o++] = alpha[v & 63];
    }
    size_t rest = n - i;
    if (rest > 0) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (rest == 2) v |= (uint32_t)in[i + 1] << 8;
        out[o++] = alpha[v >> 18 & 63];
        out[o++] = alpha[v >> 12 & 63];
        if (rest == 2)
            out[o++] = alpha[v >> 6 & 63];
        else if (pad)
            out[o++] = '=';
        if (pad) out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

size_t oc_base64_encode(const uint8_t *in, size_t n, char *out)
{
    return b64_encode(b64_std, true, in, n, out);
}

size_t oc_base64url_encode(const uint8_t *in, size_t n, char *out)
{
    return b64_encode(b64_url, false, in, n, out);
}

static int b64_val(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == (url ? '-' : '+')) return 62;
    if (c == (url ? '_' : '/')) return 63;
    return -1;
}

/*
 * Strict decoder: only the alphabet, no whitespace, padding exactly where required (standard)
 * or absent (url), and the unused low bits of the last character must be zero, so every byte
 * string has exactly one accepted encoding (signatures are compared after decoding).
 */
static long b64_decode(bool url, const char *in, size_t n, uint8_t *out, size_t out_cap)
{
    if (in == NULL) return n == 0 ? 0 : -1;
    size_t data_chars = n;
    if (!url) {
        if (n % 4 != 0) return -1;
        if (n > 0 && in[n - 1] == '=') data_chars--;
        if (n > 1 && in[n - 2] == '=') data_chars--;
    } else if (n % 4 == 1) {
        return -1;
    }
    size_t tail = data_chars % 4;
    if (tail == 1) return -1;
    size_t outlen = data_chars / 4 * 3 + (tail ? tail - 1 : 0);
    if (outlen > out_cap || outlen > (size_t)LONG_MAX) return -1;

    size_t o = 0, i = 0;
    for (; i + 4 <= data_chars; i += 4) {
        int a = b64_val((unsigned char)in[i], url), b = b64_val((unsigned char)in[i + 1], url);
        int c = b64_val((unsigned char)in[i + 2], url), d = b64_val((unsigned char)in[i + 3], url);
        if ((a | b | c | d) < 0) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        out[o++] = (uint8_t)(v >> 16);
        out[o++] = (uint8_t)(v >> 8);
        out[o++] = (uint8_t)v;
    }
    if (tail > 0) {
        int a = b64_val((unsigned char)in[i], url), b = b64_val((unsigned char)in[i + 1], url);
        int c = tail == 3 ? b64_val((unsigned char)in[i + 2], url) : 0;
        if ((a | b | c) < 0) return -1;
        uint32_t v = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6;
        if (tail == 2 && (v & 0xFFFF) != 0) return -1;
        if (tail == 3 && (v & 0xFF) != 0) return -1;
        out[o++] = (uint8_t)(v >> 16);
        if (tail == 3) out[o++] = (uint8_t)(v >> 8);
    }
    return (long)o;
}

long oc_base64_decode(const char *in, size_t n, uint8_t *out, size_t out_cap)
{
    return b64_decode(false, in, n, out, out_cap);
}

long oc_base64url_decode(const char *in, size_t n, uint8_t *out, size_t out_cap)
{
    return b64_decode(true, in, n, out, out_cap);
}

void oc_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 0x0F];
    }
    out[2 * n] = '\0';
}

/* ---- UTF-8 ---- */

/*
 * Length of the well-formed UTF-8 sequence at s[0..n) (Unicode Table 3-7: no overlongs, no
 * surrogates, nothing above U+10FFFF), or 0 when it is ill-formed or truncated. NUL is refused.
 */
static size_t utf8_seq_len(const unsigned char *s, size_t n, uint32_t *cp_out)
{
    unsigned char c = s[0];
    if (c == 0) return 0;
    if (c < 0x80) {
        *cp_out = c;
        return 1;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* > U+10FFFF */
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    cp = cp << 6 | (s[1] & 0x3F);
    for (size_t i = 2; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    *cp_out = cp;
    return len;
}

bool oc_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        uint32_t cp;
        /* ASCII fast path */
        if (p[i] >= 0x01 && p[i] < 0x80) {
            i++;
            continue;
        }
        size_t l = utf8_seq_len(p + i, n - i, &cp);
        if (l == 0) return false;
        i += l;
    }
    return true;
}

/* The counters assume valid input (callers check oc_utf8_valid first) and simply look at lead
 * bytes; on invalid input they still terminate and never read past n. */
size_t oc_utf16_units(const char *s, size_t n)
{
    size_t units = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) == 0x80) continue;
        units += c >= 0xF0 ? 2 : 1;
    }
    return units;
}

size_t oc_utf8_chars(const char *s, size_t n)
{
    size_t chars = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xC0) != 0x80) chars++;
    }
    return chars;
}

size_t oc_utf8_prefix(const char *s, size_t n, size_t max_chars)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, chars = 0;
    while (i < n && chars < max_chars) {
        uint32_t cp;
        size_t l = utf8_seq_len(p + i, n - i, &cp);
        if (l == 0) break;
        i += l;
        chars++;
    }
    return i;
}

/* ---- JSON ---- */

bool oc_json_valid(const char *s, size_t n, bool require_container)
{
    if (s == NULL || n == 0) return false;
    if (memchr(s, '\0', n) != NULL) return false;
    /* Deeply nested input never reaches jansson's recursive parser. */
    if (!oc_json_depth_ok(s, n, OC_JSON_DEPTH_MAX)) return false;
    /* Integers as reals: a 30-digit id is valid JSON even if it does not fit a long long.
     * Without JSON_ALLOW_NUL, "\u0000" is refused, as PostgreSQL's jsonb does. */
    size_t flags = JSON_DECODE_INT_AS_REAL;
    if (!require_container) flags |= JSON_DECODE_ANY;
    json_error_t jerr;
    json_t *v = json_loadb(s, n, flags, &jerr);
    if (v == NULL) return false;
    bool ok = !require_container || json_is_object(v) || json_is_array(v);
    json_decref(v);
    return ok;
}

bool oc_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    int diff = 0;
    if (n > 0) diff = CRYPTO_memcmp(a, b, n);
    return (diff == 0) & (alen == blen);
}

/* ---- clocks ---- */

static int64_t clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t oc_now_ms(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000000;
}

int64_t oc_now_us(void)
{
    return clock_ns(CLOCK_REALTIME) / 1000;
}

int64_t oc_mono_us(void)
{
    return clock_ns(CLOCK_MONOTONIC) / 1000;
}

int64_t oc_mono_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

/* ---- files ---- */

/* The file may hold a secret: every buffer that is let go is wiped first. */
static void wipe_free(char *p, size_t cap)
{
    if (p == NULL) return;
    OPENSSL_cleanse(p, cap);
    free(p);
}

oc_err_t oc_read_file(const char *path, size_t max, bool strip_newline, char **out, size_t *len_out,
                      oc_error_t *err)
{
    oc_err_t rc = OC_OK;
    int fd = -1;
    char *buf = NULL;
    size_t cap = 0, len = 0;
    char ebuf[128];

    *out = NULL;
    if (len_out != NULL) *len_out = 0;
    if (path == NULL || max >= SIZE_MAX - 1) {
        rc = oc_error_set(err, OC_E_INVALID, "read file: invalid arguments");
        goto out;
    }
    do {
        fd = open(path, O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        rc = oc_error_set(err, OC_E_IO, "could not open \"%s\": %s", path,
                          strerror_r(errno, ebuf, sizeof ebuf));
        goto out;
    }
    struct stat st = {0};
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (uint64_t)st.st_size > max) {
        rc = oc_error_set(err, OC_E_TOO_LARGE, "file \"%s\" is larger than %zu bytes", path, max);
        goto out;
    }
    /* Files in /proc or on some mounts report size 0, so the size is only a first guess. */
    cap = (S_ISREG(st.st_mode) && st.st_size > 0) ? (size_t)st.st_size + 2 : 4096;
    if (cap > max + 2) cap = max + 2;
    buf = malloc(cap);
    if (buf == NULL) {
        rc = oc_error_set(err, OC_E_NOMEM, "read file: out of memory");
        goto out;
    }
    for (;;) {
        if (len + 1 >= cap) {
            if (cap >= max + 2) break; /* holds max + 1 bytes: too large */
            size_t ncap = cap * 2 > max + 2 ? max + 2 : cap * 2;
            char *nb = malloc(ncap);
            if (nb == NULL) {
                rc = oc_error_set(err, OC_E_NOMEM, "read file: out of memory");
                goto out;
            }
            memcpy(nb, buf, len);
            wipe_free(buf, cap);
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - 1 - len);
        if (r < 0) {
            if (errno == EINTR) continue;
            rc = oc_error_set(err, OC_E_IO, "could not read \"%s\": %s", path,
                              strerror_r(errno, ebuf, sizeof ebuf));
            goto out;
        }
        if (r == 0) break;
        len += (size_t)r;
    }
    if (len > max) {
        rc = oc_error_set(err, OC_E_TOO_LARGE, "file \"%s\" is larger than %zu bytes", path, max);
        goto out;
    }
    if (strip_newline && len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r') len--;
    }
    buf[len] = '\0';
    *out = buf;
    buf = NULL;
    if (len_out != NULL) *len_out = len;
out:
    wipe_free(buf, cap);
    if (fd >= 0) close(fd);
    return rc;
}

/* The mapping's size sits in front of the caller's bytes, so free needs only the pointer. The
 * header is 16 bytes to keep the returned pointer aligned for any type. */
#define SECRET_HDR 16

/*
 * One-page allocations (a token unsealed for one send, a request body with a secret) come and
 * go on every call: mapping and unmapping them each time costs four system calls and, on munmap
 * in a process with many threads, a TLB shootdown on every core. Freed pages are wiped and kept
 * (still MADV_DONTDUMP and MADV_WIPEONFORK) for the next allocation instead, up to a bound.
 */
#define SECRET_POOL_MAX 64
static pthread_mutex_t secret_pool_mu = PTHREAD_MUTEX_INITIALIZER;
static uint8_t *secret_pool[SECRET_POOL_MAX];
static size_t secret_pool_n;

static size_t page_size(void)
{
    long page = sysconf(_SC_PAGESIZE);
    return page > 0 ? (size_t)page : 4096;
}

void *oc_secret_alloc(size_t n)
{
    size_t psz = page_size();
    size_t total;
    uint8_t *p = NULL;

    if (n > SIZE_MAX - SECRET_HDR - psz) return NULL;
    total = (n + SECRET_HDR + psz - 1) / psz * psz;
    if (total == psz) {
        pthread_mutex_lock(&secret_pool_mu);
        if (secret_pool_n > 0) p = secret_pool[--secret_pool_n];
        pthread_mutex_unlock(&secret_pool_mu);
        if (p != NULL) {
            memset(p, 0, psz); /* wiped when freed; zeroed bytes are the contract */
            memcpy(p, &total, sizeof total);
            return p + SECRET_HDR;
        }
    }
    p = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    /* Best effort: an old kernel without these flags still gets a process that is not
     * dumpable (oc_svc_configure), which is the main protection. */
    (void)madvise(p, total, MADV_DONTDUMP);
#ifdef MADV_WIPEONFORK
    (void)madvise(p, total, MADV_WIPEONFORK);
#endif
    memcpy(p, &total, sizeof total);
    return p + SECRET_HDR;
}

void oc_secret_free(void *ptr)
{
    uint8_t *p;
    size_t total;

    if (ptr == NULL) return;
    p = (uint8_t *)ptr - SECRET_HDR;
    memcpy(&total, p, sizeof total);
    OPENSSL_cleanse(p, total);
    if (total == page_size()) {
        pthread_mutex_lock(&secret_pool_mu);
        bool kept = secret_pool_n < SECRET_POOL_MAX;
        if (kept) secret_pool[secret_pool_n++] = p;
        pthread_mutex_unlock(&secret_pool_mu);
        if (kept) return;
    }
    munmap(p, total);
}

char *oc_secret_strndup(const char *s, size_t n)
{
    char *out = oc_secret_alloc(n + 1);

    if (out == NULL) return NULL;
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}
