/* Unit tests for the per-request arena (common/src/arena.c). */
#include <CUnit/Basic.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "omnichat/arena.h"
#include "omnichat/persistence/v1/persistence.pb-c.h"

#include "test_main.h"

static void test_alloc_alignment_and_zero(void)
{
    oc_arena_t *a = oc_arena_create(256);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    for (size_t n = 0; n < 200; n++) {
        unsigned char *p = oc_arena_alloc(a, n % 37);
        CU_ASSERT_PTR_NOT_NULL_FATAL(p);
        CU_ASSERT_EQUAL((uintptr_t)p % alignof(max_align_t), 0);
        for (size_t i = 0; i < n % 37; i++)
            CU_ASSERT_EQUAL(p[i], 0);
        memset(p, 0xab, n % 37);
    }
    /* Larger than a block: gets its own block, still aligned and zeroed. */
    unsigned char *big = oc_arena_alloc(a, 10000);
    CU_ASSERT_PTR_NOT_NULL_FATAL(big);
    CU_ASSERT_EQUAL((uintptr_t)big % alignof(max_align_t), 0);
    CU_ASSERT_EQUAL(big[0], 0);
    CU_ASSERT_EQUAL(big[9999], 0);
    memset(big, 1, 10000);
    /* Distinct pointers for zero-size requests. */
    void *z1 = oc_arena_alloc(a, 0), *z2 = oc_arena_alloc(a, 0);
    CU_ASSERT_PTR_NOT_NULL(z1);
    CU_ASSERT_PTR_NOT_EQUAL(z1, z2);
    CU_ASSERT_PTR_NULL(oc_arena_alloc(a, SIZE_MAX));
    oc_arena_destroy(a);
    oc_arena_destroy(NULL);
}

static void test_strings(void)
{
    oc_arena_t *a = oc_arena_create(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    char src[] = "hello";
    char *s = oc_arena_strdup(a, src);
    CU_ASSERT_STRING_EQUAL(s, "hello");
    CU_ASSERT_PTR_NOT_EQUAL(s, src);
    CU_ASSERT_STRING_EQUAL(oc_arena_strndup(a, "abcdef", 3), "abc");
    CU_ASSERT_STRING_EQUAL(oc_arena_strndup(a, "ab", 10), "ab");
    CU_ASSERT_STRING_EQUAL(oc_arena_strdup(a, ""), "");
    CU_ASSERT_PTR_NULL(oc_arena_strdup(a, NULL));
    CU_ASSERT_STRING_EQUAL(oc_arena_sprintf(a, "%s-%d", "x", 42), "x-42");
    char longbuf[20000];
    memset(longbuf, 'q', sizeof(longbuf) - 1);
    longbuf[sizeof(longbuf) - 1] = '\0';
    char *l = oc_arena_sprintf(a, "<%s>", longbuf);
    CU_ASSERT_PTR_NOT_NULL_FATAL(l);
    CU_ASSERT_EQUAL(strlen(l), sizeof(longbuf) + 1);
    CU_ASSERT_EQUAL(l[0], '<');
    CU_ASSERT_EQUAL(l[sizeof(longbuf)], '>');
    oc_arena_destroy(a);
}

static char g_order[16];
static size_t g_norder;

static void record(void *p)
{
    g_order[g_norder++] = *(const char *)p;
}

static void test_defer_order(void)
{
    static const char a1 = 'a', b1 = 'b', c1 = 'c';
    oc_arena_t *a = oc_arena_create(64);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    g_norder = 0;
    CU_ASSERT_EQUAL(oc_arena_defer(a, record, (void *)&a1), 0);
    CU_ASSERT_EQUAL(oc_arena_defer(a, record, (void *)&b1), 0);
    /* Push the arena past its first block so cleanups live in several blocks. */
    for (int i = 0; i < 20; i++)
        CU_ASSERT_PTR_NOT_NULL(oc_arena_alloc(a, 48));
    CU_ASSERT_EQUAL(oc_arena_defer(a, record, (void *)&c1), 0);
    CU_ASSERT_EQUAL(g_norder, 0);
    oc_arena_destroy(a);
    CU_ASSERT_EQUAL(g_norder, 3);
    CU_ASSERT_EQUAL(memcmp(g_order, "cba", 3), 0);
}

static void test_reset(void)
{
    static const char x = 'x', y = 'y';
    oc_arena_t *a = oc_arena_create(128);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    g_norder = 0;
    char *first = oc_arena_strdup(a, "first");
    oc_arena_defer(a, record, (void *)&x);
    for (int i = 0; i < 50; i++)
        oc_arena_alloc(a, 100);
    oc_arena_reset(a);
    CU_ASSERT_EQUAL(g_norder, 1);
    CU_ASSERT_EQUAL(g_order[0], 'x');
    /* The first block is reused from its start, and hands out zeroed memory again. */
    char *again = oc_arena_alloc(a, 8);
    CU_ASSERT_PTR_EQUAL(again, first);
    CU_ASSERT_EQUAL(again[0], 0);
    oc_arena_defer(a, record, (void *)&y);
    oc_arena_reset(a);
    CU_ASSERT_EQUAL(g_norder, 2);
    CU_ASSERT_EQUAL(g_order[1], 'y');
    oc_arena_reset(a);
    CU_ASSERT_EQUAL(g_norder, 2);
    oc_arena_destroy(a);
    CU_ASSERT_EQUAL(g_norder, 2);
}

static void test_protobuf_allocator(void)
{
    oc_arena_t *a = oc_arena_create(0);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    ProtobufCAllocator al;
    oc_arena_protobuf_allocator(a, &al);
    void *p = al.alloc(al.allocator_data, 24);
    CU_ASSERT_PTR_NOT_NULL(p);
    al.free(al.allocator_data, p); /* a no-op; destroy frees it */
    oc_arena_destroy(a);
}

static void test_protobuf_allocator_budget(void)
{
    oc_arena_t *a = oc_arena_create(0);
    oc_arena_budget_t b;
    ProtobufCAllocator alloc;

    oc_arena_protobuf_allocator_budget(a, 100, &b, &alloc);
    void *p = alloc.alloc(alloc.allocator_data, 40); /* charged 48 */
    CU_ASSERT_PTR_NOT_NULL(p);
    CU_ASSERT_EQUAL(b.used, 48);
    CU_ASSERT_PTR_NOT_NULL(alloc.alloc(alloc.allocator_data, 48)); /* 96 of 100 */
    CU_ASSERT_FALSE(b.exhausted);
    CU_ASSERT_PTR_NULL(alloc.alloc(alloc.allocator_data, 1)); /* 16 more: over */
    CU_ASSERT_TRUE(b.exhausted);
    alloc.free(alloc.allocator_data, p); /* gives nothing back: arena memory stays */
    CU_ASSERT_PTR_NULL(alloc.alloc(alloc.allocator_data, 1));

    /* 300 empty `messages` on the wire unpack within a generous budget, not within 1 KiB. */
    static uint8_t wire[600];
    for (size_t i = 0; i < sizeof wire; i += 2) {
        wire[i] = 0x12;
        wire[i + 1] = 0x00;
    }
    const ProtobufCMessageDescriptor *d =
        &omnichat__persistence__v1__persist_inbound_request__descriptor;
    oc_arena_protobuf_allocator_budget(a, 1024, &b, &alloc);
    CU_ASSERT_PTR_NULL(protobuf_c_message_unpack(d, &alloc, sizeof wire, wire));
    CU_ASSERT_TRUE(b.exhausted);
    CU_ASSERT(b.used <= 1024);
    oc_arena_protobuf_allocator_budget(a, 1 << 20, &b, &alloc);
    CU_ASSERT_PTR_NOT_NULL(protobuf_c_message_unpack(d, &alloc, sizeof wire, wire));
    CU_ASSERT_FALSE(b.exhausted);
    oc_arena_destroy(a);
}

int main(void)
{
    if (CU_initialize_registry() != CUE_SUCCESS) return 1;
    CU_pSuite s = CU_add_suite("arena", NULL, NULL);
    CU_add_test(s, "alloc alignment and zeroing", test_alloc_alignment_and_zero);
    CU_add_test(s, "strdup, strndup, sprintf", test_strings);
    CU_add_test(s, "defer runs last-registered first", test_defer_order);
    CU_add_test(s, "reset runs cleanups and reuses the first block", test_reset);
    CU_add_test(s, "protobuf allocator", test_protobuf_allocator);
    CU_add_test(s, "protobuf allocator under a budget", test_protobuf_allocator_budget);
    int failed = oc_test_run();
    return failed ? 1 : 0;
}
