"""ListMessages: chronological order by (channel_timestamp, id), cursor pages in both directions,
page sizes, late messages, the fields each row carries; ListConversations ordering and cursors."""
import json
import random
import time

import grpc
import pytest

from harness import Builder, assert_code, expect_invalid, now_ms, pb, rpc_error, sql_lit

TS = 1_690_000_000_000
N = 250


@pytest.fixture(scope="module")
def big(api):
    """One conversation with N inbound messages, inserted in shuffled order, timestamps with ties
    (three messages per millisecond value) and an interleaved outbound message every 10."""
    b = Builder(api)
    acct = b.account()
    conv = b.conversation(acct, "T-big")
    items = []
    for i in range(N):
        ts = TS + (i // 3) * 1000
        items.append(("out" if i % 10 == 9 else "in", ts, f"m-{i:03d}"))
    random.Random(38).shuffle(items)
    inbound = [b.inbound(acct, ts, user="U-big", thread_key="T-big", ext_id=key, text=key)
               for kind, ts, key in items if kind == "in"]
    ids = {}
    for i in range(0, len(inbound), 100):
        for it, r in zip(inbound[i:i + 100], b.persist(*inbound[i:i + 100])):
            assert r.conversation_id == conv.conversation_id
            ids[r.message_id] = it.channel_timestamp_ms
    for kind, ts, key in items:
        if kind == "out":
            m = b.message(conv, ts, key=key, direction=pb.DIRECTION_OUTBOUND, text=key,
                          sender_display_name="Agent").message
            ids[m.message_id] = ts
    expected = sorted(ids, key=lambda mid: (ids[mid], mid))
    assert len(expected) == N
    return b, conv, expected


def page(b, conv, **kw):
    return b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id, **kw)


def assert_chronological(msgs):
    keys = [(m.channel_timestamp_ms, m.message_id) for m in msgs]
    assert keys == sorted(keys), "page not in (channel_timestamp, message_id) order"


def test_newest_page_has_default_size_50_in_chronological_order(big):
    b, conv, expected = big
    r = page(b, conv)
    assert [m.message_id for m in r.messages] == expected[-50:]
    assert_chronological(r.messages)
    assert r.has_older is True
    assert r.has_newer is False


def test_page_size_200_is_allowed_and_201_is_rejected(big):
    b, conv, expected = big
    r = page(b, conv, page_size=200)
    assert [m.message_id for m in r.messages] == expected[-200:]
    expect_invalid(b.api.ListMessages, "page_size", tenant_id=b.tenant,
                   conversation_id=conv.conversation_id, page_size=201)
    expect_invalid(b.api.ListMessages, "page_size", tenant_id=b.tenant,
                   conversation_id=conv.conversation_id, page_size=-1)


def test_from_oldest_page(big):
    b, conv, expected = big
    r = page(b, conv, from_oldest=True, page_size=10)
    assert [m.message_id for m in r.messages] == expected[:10]
    assert r.has_older is False and r.has_newer is True


@pytest.mark.parametrize("size", [50, 37])
def test_walk_forward_from_oldest_returns_every_message_once(big, size):
    b, conv, expected = big
    seen = []
    r = page(b, conv, from_oldest=True, page_size=size)
    pages = 0
    while True:
        pages += 1
        assert_chronological(r.messages)
        assert r.has_older == (len(seen) > 0), f"has_older wrong on page {pages}"
        seen += [m.message_id for m in r.messages]
        assert r.has_newer == (len(seen) < N), f"has_newer wrong on page {pages} ({len(seen)} seen)"
        if not r.has_newer:
            break
        assert len(r.messages) == size
        assert pages < 20, "runaway pagination"
        r = page(b, conv, after=r.after_cursor, page_size=size)
    assert seen == expected
    # Polling past the end: empty page, the same cursor back, nothing newer.
    tail = page(b, conv, after=r.after_cursor, page_size=size)
    assert list(tail.messages) == []
    assert tail.has_newer is False
    assert tail.after_cursor == r.after_cursor


@pytest.mark.parametrize("size", [50, 37])
def test_walk_backward_from_newest_returns_every_message_once(big, size):
    b, conv, expected = big
    seen = []
    r = page(b, conv, page_size=size)
    pages = 0
    while True:
        pages += 1
        assert_chronological(r.messages)
        assert r.has_newer == (len(seen) > 0), f"has_newer wrong on page {pages}"
        seen = [m.message_id for m in r.messages] + seen
        assert r.has_older == (len(seen) < N), f"has_older wrong on page {pages} ({len(seen)} seen)"
        if not r.has_older:
            break
        assert len(r.messages) == size
        assert pages < 20, "runaway pagination"
        r = page(b, conv, before=r.before_cursor, page_size=size)
    assert seen == expected
    head = page(b, conv, before=r.before_cursor, page_size=size)
    assert list(head.messages) == [] and head.has_older is False


def test_before_and_after_cursors_are_inverse(big):
    b, conv, expected = big
    newest = page(b, conv, page_size=20)
    older = page(b, conv, before=newest.before_cursor, page_size=20)
    assert [m.message_id for m in older.messages] == expected[-40:-20]
    back = page(b, conv, after=older.after_cursor, page_size=20)
    assert [m.message_id for m in back.messages] == expected[-20:]


def test_empty_conversation_timeline(b):
    conv = b.conversation(b.account())
    r = page(b, conv)
    assert list(r.messages) == []
    assert r.has_older is False and r.has_newer is False
    assert r.before_cursor == ""


def test_catching_up_with_after_cursor_sees_new_messages(b):
    conv = b.conversation(b.account())
    for i in range(3):
        b.message(conv, TS + i)
    r = page(b, conv)
    assert len(r.messages) == 3
    empty = page(b, conv, after=r.after_cursor)
    assert list(empty.messages) == [] and empty.after_cursor == r.after_cursor
    new = b.message(conv, TS + 10).message
    r2 = page(b, conv, after=empty.after_cursor)
    assert [m.message_id for m in r2.messages] == [new.message_id]


def test_late_message_lands_in_its_chronological_place(b):
    conv = b.conversation(b.account())
    ids = {}
    for ts in (1000, 2000, 3000):
        ids[ts] = b.message(conv, TS + ts, text=f"at {ts}").message.message_id
    c1 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert c1.last_message_at_ms == TS + 3000
    ids[1500] = b.message(conv, TS + 1500, text="late").message.message_id
    r = page(b, conv)
    assert [m.message_id for m in r.messages] == [ids[t] for t in (1000, 1500, 2000, 3000)]
    c2 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert c2.last_message_at_ms == TS + 3000, "a late message moved last_message_at back"
    assert c2.message_count == 4
    assert c2.last_message_preview == "at 3000", "the preview is the newest message's text"
    # A newer one does move it forward.
    b.message(conv, TS + 4000, text="newest")
    c3 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert c3.last_message_at_ms == TS + 4000 and c3.last_message_preview == "newest"


def test_created_at_and_channel_timestamp_are_stored_and_returned_separately(b, db):
    conv = b.conversation(b.account())
    channel_ts = 1_262_304_000_123  # 2010-01-01T00:00:00.123Z
    before = now_ms()
    m = b.message(conv, channel_ts).message
    after = now_ms()
    assert m.channel_timestamp_ms == channel_ts
    assert before - 5000 <= m.created_at_ms <= after + 5000, (m.created_at_ms, before, after)
    [t] = page(b, conv).messages
    assert t.channel_timestamp_ms == channel_ts and t.created_at_ms == m.created_at_ms
    [row] = db.rows("SELECT (extract(epoch FROM channel_timestamp) * 1000)::bigint, "
                    "(extract(epoch FROM created_at) * 1000)::bigint FROM omnichat.messages "
                    f"WHERE tenant_id = {sql_lit(b.tenant)}")
    assert int(row[0]) == channel_ts
    assert abs(int(row[1]) - m.created_at_ms) <= 1


def test_content_text_and_struct_round_trip(b):
    conv = b.conversation(b.account())
    text = "สวัสดีครับ 👋 — line1\nline2\t\"quoted\" \\ back"
    struct = {"marketplace": {"listing_id": "L-9", "price": {"amount": 1999, "currency": "THB"}},
              "tags": ["a", "b"], "nested": [{"x": None, "y": True, "z": 1.5}], "uni": "ไทย"}
    m = b.message(conv, TS, text=text, content_struct_json=json.dumps(struct)).message
    arr = b.message(conv, TS + 1, text="", content_struct_json='[1, "two", {"3": 3}]').message
    none = b.message(conv, TS + 2, text="plain").message
    assert m.content_text == text
    assert json.loads(m.content_struct_json) == struct
    msgs = {x.message_id: x for x in page(b, conv).messages}
    assert msgs[m.message_id].content_text == text
    assert json.loads(msgs[m.message_id].content_struct_json) == struct
    assert json.loads(msgs[arr.message_id].content_struct_json) == [1, "two", {"3": 3}]
    assert msgs[none.message_id].content_struct_json == ""


def test_timeline_rows_carry_sender_status_error_category_and_attachments(b):
    acct = b.account()
    conv = b.conversation(acct, "T-rows")
    [r] = b.persist(b.inbound(acct, TS, user="U-rows", thread_key="T-rows", contact_display_name="Carol",
                              text="need help", attachments=[pb.AttachmentInput(kind="image",
                                                                                url="https://cdn.example/p.jpg",
                                                                                mime_type="image/jpeg")]))
    out = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                               idempotency_key="send-1", request_fingerprint="fp1",
                               sender_id="agent-1", sender_display_name="Dana",
                               content_text="we're on it", lease_owner="w1", lease_seconds=60).message
    b.api.CompleteOutbound(tenant_id=b.tenant, message_id=out.message_id, lease_owner="w1",
                           outcome=pb.OUTBOUND_OUTCOME_FAILED,
                           error_category=pb.ERROR_CATEGORY_RATE_LIMIT_ERROR, error_detail="429")
    bot = b.message(conv, now_ms() + 60_000, direction=pb.DIRECTION_OUTBOUND,
                    sender_type=pb.SENDER_TYPE_BOT, sender_display_name="Helper Bot").message
    msgs = page(b, conv).messages
    assert_chronological(msgs)
    by_id = {m.message_id: m for m in msgs}
    assert set(by_id) == {r.message_id, out.message_id, bot.message_id}
    inbound, failed, botm = by_id[r.message_id], by_id[out.message_id], by_id[bot.message_id]
    assert (inbound.sender_type, inbound.sender_display_name, inbound.status) == \
        (pb.SENDER_TYPE_CONTACT, "Carol", pb.MESSAGE_STATUS_RECEIVED)
    assert inbound.error_category == pb.ERROR_CATEGORY_UNSPECIFIED
    assert [(a.kind, a.mime_type) for a in inbound.attachments] == [("image", "image/jpeg")]
    assert (failed.sender_type, failed.sender_display_name, failed.status) == \
        (pb.SENDER_TYPE_AGENT, "Dana", pb.MESSAGE_STATUS_FAILED)
    assert failed.error_category == pb.ERROR_CATEGORY_RATE_LIMIT_ERROR
    assert failed.direction == pb.DIRECTION_OUTBOUND
    assert list(failed.attachments) == []
    assert (botm.sender_type, botm.sender_display_name, botm.status) == \
        (pb.SENDER_TYPE_BOT, "Helper Bot", pb.MESSAGE_STATUS_SENT)


# ---------------------------------------------------------------------------------------------
# ListConversations


@pytest.fixture(scope="module")
def convs(api):
    """A tenant with 3 accounts (LINE L1: 5 conversations, LINE L2: 3, FACEBOOK F: 4), each
    conversation with one message in the past."""
    b = Builder(api)
    l1 = b.account(pb.CHANNEL_TYPE_LINE)
    l2 = b.account(pb.CHANNEL_TYPE_LINE)
    f = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    by_acct = {}
    for acct, n in ((l1, 5), (f, 4), (l2, 3)):
        for i in range(n):
            conv = b.conversation(acct, f"T-{i}")
            b.message(conv, TS + i * 1000)
            by_acct.setdefault(acct.channel_account_id, []).append(conv.conversation_id)
    return b, (l1, l2, f), by_acct


def list_all(b, **kw):
    r = b.api.ListConversations(tenant_id=b.tenant, page_size=200, **kw)
    assert r.next_page_token == ""
    return list(r.conversations)


def assert_activity_order(cs):
    keys = [(c.last_activity_at_ms, c.conversation_id) for c in cs]
    assert keys == sorted(keys, reverse=True), "not newest activity first, then id descending"
    for c in cs:
        assert c.last_activity_at_ms == max(c.created_at_ms, c.last_message_at_ms), c


def test_list_conversations_by_tenant_and_filters(convs):
    b, (l1, l2, f), by_acct = convs
    every = list_all(b)
    assert {c.conversation_id for c in every} == {x for v in by_acct.values() for x in v}
    assert len(every) == 12
    assert all(c.tenant_id == b.tenant for c in every)
    assert_activity_order(every)
    line = list_all(b, channel_type=pb.CHANNEL_TYPE_LINE)
    assert {c.conversation_id for c in line} == set(by_acct[l1.channel_account_id] + by_acct[l2.channel_account_id])
    assert_activity_order(line)
    fb = list_all(b, channel_type=pb.CHANNEL_TYPE_FACEBOOK)
    assert {c.conversation_id for c in fb} == set(by_acct[f.channel_account_id])
    only_l2 = list_all(b, channel_account_id=l2.channel_account_id)
    assert {c.conversation_id for c in only_l2} == set(by_acct[l2.channel_account_id])
    both = list_all(b, channel_type=pb.CHANNEL_TYPE_LINE, channel_account_id=l1.channel_account_id)
    assert {c.conversation_id for c in both} == set(by_acct[l1.channel_account_id])
    mismatch = list_all(b, channel_type=pb.CHANNEL_TYPE_FACEBOOK, channel_account_id=l1.channel_account_id)
    assert mismatch == []
    assert list_all(b, channel_type=pb.CHANNEL_TYPE_INSTAGRAM) == []


def test_list_conversations_newest_activity_first(b):
    acct = b.account()
    # 10 ms apart: distinct activity times, so the order is by time and not by the id tie-break.
    old = b.conversation(acct, "T-old")
    time.sleep(0.01)
    mid = b.conversation(acct, "T-mid")
    time.sleep(0.01)
    new = b.conversation(acct, "T-new")
    order = [c.conversation_id for c in list_all(b)]
    assert order == [new.conversation_id, mid.conversation_id, old.conversation_id]
    # A message newer than every creation time moves "old" to the top.
    b.message(old, now_ms() + 2000)
    order = [c.conversation_id for c in list_all(b)]
    assert order == [old.conversation_id, new.conversation_id, mid.conversation_id]
    # A late (past) message does not move "mid".
    b.message(mid, TS)
    assert [c.conversation_id for c in list_all(b)] == order


def walk_conversations(b, size, **filters):
    seen, token, pages = [], "", 0
    while True:
        r = b.api.ListConversations(tenant_id=b.tenant, page_size=size, page_token=token, **filters)
        pages += 1
        assert len(r.conversations) <= size
        seen += [c.conversation_id for c in r.conversations]
        token = r.next_page_token
        if not token:
            return seen, pages
        assert len(r.conversations) == size, "a non-last page must be full"
        assert pages < 50, "runaway pagination"


@pytest.mark.parametrize("size,filters", [
    (5, {}), (3, {}), (12, {}), (1, {"channel_type": pb.CHANNEL_TYPE_LINE}),
    (2, {"channel_type": pb.CHANNEL_TYPE_FACEBOOK}), (4, {"channel_type": pb.CHANNEL_TYPE_FACEBOOK}),
])
def test_list_conversations_cursor_walk_returns_each_once(convs, size, filters):
    b, _, _ = convs
    expected = [c.conversation_id for c in list_all(b, **filters)]
    seen, pages = walk_conversations(b, size, **filters)
    assert seen == expected
    assert pages == max(1, -(-len(expected) // size)), "next_page_token must be empty on the last page"


def test_list_conversations_default_page_size_is_50(b):
    acct = b.account()
    items = [b.inbound(acct, TS + i, user=f"U{i}", thread_key=f"T{i}") for i in range(55)]
    b.persist(*items)
    r = b.api.ListConversations(tenant_id=b.tenant)
    assert len(r.conversations) == 50 and r.next_page_token
    r2 = b.api.ListConversations(tenant_id=b.tenant, page_token=r.next_page_token)
    assert len(r2.conversations) == 5 and r2.next_page_token == ""
    assert not {c.conversation_id for c in r.conversations} & {c.conversation_id for c in r2.conversations}
    expect_invalid(b.api.ListConversations, "page_size", tenant_id=b.tenant, page_size=201)


def test_list_conversations_cursor_with_other_filters_is_invalid(convs, b2):
    b, (l1, l2, f), _ = convs
    r = b.api.ListConversations(tenant_id=b.tenant, page_size=2, channel_type=pb.CHANNEL_TYPE_LINE)
    token = r.next_page_token
    assert token
    # Positive control: the token works with its own filters.
    b.api.ListConversations(tenant_id=b.tenant, page_size=2, channel_type=pb.CHANNEL_TYPE_LINE,
                            page_token=token)
    for other in ({}, {"channel_type": pb.CHANNEL_TYPE_FACEBOOK},
                  {"channel_type": pb.CHANNEL_TYPE_LINE, "channel_account_id": l1.channel_account_id},
                  {"channel_account_id": l1.channel_account_id}):
        expect_invalid(b.api.ListConversations, "page_token", tenant_id=b.tenant, page_size=2,
                       page_token=token, **other)
    # Bound to the tenant too.
    expect_invalid(b.api.ListConversations, "page_token", tenant_id=b2.tenant, page_size=2,
                   channel_type=pb.CHANNEL_TYPE_LINE, page_token=token)


def test_list_conversations_garbled_token_is_invalid(b):
    for token in ("garbage!!", "AAAA", "eyJ0cyI6MH0"):
        expect_invalid(b.api.ListConversations, "page_token", tenant_id=b.tenant, page_token=token)


def test_pages_of_large_messages_are_cut_short_but_lose_nothing(b):
    """60 messages of ~80 KB each exceed what a gRPC client accepts in one response (4 MiB):
    the service returns fewer than page_size, says more follow, and a walk still sees all."""
    acct = b.account()
    big_text = "t" * 20000
    big_struct = '{"blob":"' + "s" * 60000 + '"}'
    ts = now_ms() - 100_000
    for chunk in range(3):
        items = [b.inbound(acct, ts + chunk * 20 + i, user="U-big", thread_key="U-big",
                           ext_id=f"big-{chunk}-{i}", text=big_text, content_struct_json=big_struct)
                 for i in range(20)]
        res = b.persist(*items)
    conv_id = res[0].conversation_id
    page = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv_id, from_oldest=True,
                              page_size=200)
    assert 0 < len(page.messages) < 60 and page.has_newer
    assert page.ByteSize() < 4 * 1024 * 1024
    seen = [m.message_id for m in page.messages]
    while page.has_newer:
        page = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv_id,
                                  after=page.after_cursor, page_size=200)
        seen += [m.message_id for m in page.messages]
    assert len(seen) == len(set(seen)) == 60
