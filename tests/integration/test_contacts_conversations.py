"""Contact and conversation upserts: deterministic ids per tenant + channel account, also under
concurrency; profile updates; the thread fallback rule; GetConversation."""
import json
import threading

from harness import DAY_MS, Builder, pb, run_concurrently, sql_lit


def test_upsert_contact_returns_same_id_for_same_tenant_account_user(b, db):
    acct = b.account()
    r1 = b.api.UpsertContact(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                             external_user_id="U1")
    r2 = b.api.UpsertContact(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                             external_user_id="U1")
    r3 = b.api.UpsertContact(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                             external_user_id="U1", display_name="Later")
    assert r1.created and not r2.created and not r3.created
    assert r1.contact.contact_id == r2.contact.contact_id == r3.contact.contact_id
    c = r1.contact
    assert c.tenant_id == b.tenant
    assert c.channel_account_id == acct.channel_account_id
    assert c.external_user_id == "U1"
    assert db.count(f"SELECT count(*) FROM omnichat.contacts WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_upsert_contact_is_scoped_by_channel_account_and_tenant(b, b2):
    a1, a2 = b.account(), b.account()
    other = b2.account()
    c1 = b.contact(a1, "U-same")
    c2 = b.contact(a2, "U-same")
    c3 = b2.contact(other, "U-same")
    assert len({c1.contact_id, c2.contact_id, c3.contact_id}) == 3
    assert c3.tenant_id == b2.tenant


def test_upsert_contact_20_concurrent_calls_yield_one_contact(b, db):
    acct = b.account()
    results = run_concurrently(b.api.UpsertContact, 20, tenant_id=b.tenant,
                               channel_account_id=acct.channel_account_id,
                               external_user_id="U-race", display_name="Racer")
    ids = {r.contact.contact_id for r in results}
    assert len(ids) == 1, ids
    assert sum(r.created for r in results) == 1, [r.created for r in results]
    assert db.count(f"SELECT count(*) FROM omnichat.contacts WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_upsert_contact_updates_given_profile_fields_and_keeps_empty_ones(b):
    acct = b.account()
    kw = dict(tenant_id=b.tenant, channel_account_id=acct.channel_account_id, external_user_id="U-p")
    c0 = b.api.UpsertContact(**kw, display_name="Alice", avatar_url="https://cdn.example/a.png",
                             profile_json='{"lang": "th", "tier": 1}').contact
    assert c0.display_name == "Alice"
    assert c0.avatar_url == "https://cdn.example/a.png"
    assert json.loads(c0.profile_json) == {"lang": "th", "tier": 1}

    c1 = b.api.UpsertContact(**kw, display_name="Alice B.").contact  # only the name given
    assert c1.contact_id == c0.contact_id
    assert c1.display_name == "Alice B."
    assert c1.avatar_url == "https://cdn.example/a.png"
    assert json.loads(c1.profile_json) == {"lang": "th", "tier": 1}

    c2 = b.api.UpsertContact(**kw, avatar_url="https://cdn.example/b.png").contact
    assert c2.display_name == "Alice B."
    assert c2.avatar_url == "https://cdn.example/b.png"
    assert json.loads(c2.profile_json) == {"lang": "th", "tier": 1}

    c3 = b.api.UpsertContact(**kw, profile_json='{"lang": "en"}').contact
    assert c3.display_name == "Alice B."
    assert c3.avatar_url == "https://cdn.example/b.png"
    assert json.loads(c3.profile_json) == {"lang": "en"}

    c4 = b.api.UpsertContact(**kw).contact  # nothing given: nothing changes
    assert (c4.display_name, c4.avatar_url, json.loads(c4.profile_json)) == \
        ("Alice B.", "https://cdn.example/b.png", {"lang": "en"})


def test_new_contact_without_profile_has_empty_object_profile(b):
    c = b.contact(b.account(), "U-bare")
    assert json.loads(c.profile_json or "null") == {}


def test_upsert_conversation_same_thread_same_conversation(b, db):
    acct = b.account()
    kw = dict(tenant_id=b.tenant, channel_account_id=acct.channel_account_id, thread_key="T-1")
    r1 = b.api.UpsertConversation(**kw)
    r2 = b.api.UpsertConversation(**kw)
    assert r1.created and not r2.created
    assert r1.conversation.conversation_id == r2.conversation.conversation_id
    conv = r1.conversation
    assert conv.thread_key == "T-1"
    assert conv.channel_account_id == acct.channel_account_id
    assert conv.channel_type == pb.CHANNEL_TYPE_LINE
    assert conv.message_count == 0 and conv.last_message_at_ms == 0
    # Another thread, another account, another tenant: other conversations.
    other_thread = b.conversation(acct, "T-2")
    other_acct = b.conversation(b.account(), "T-1")
    assert len({conv.conversation_id, other_thread.conversation_id, other_acct.conversation_id}) == 3
    assert db.count(f"SELECT count(*) FROM omnichat.conversations WHERE tenant_id = {sql_lit(b.tenant)}") == 3


def test_upsert_conversation_20_concurrent_calls_yield_one_conversation(b, db):
    acct = b.account()
    results = run_concurrently(b.api.UpsertConversation, 20, tenant_id=b.tenant,
                               channel_account_id=acct.channel_account_id, thread_key="T-race")
    assert len({r.conversation.conversation_id for r in results}) == 1
    assert sum(r.created for r in results) == 1, [r.created for r in results]
    assert db.count(f"SELECT count(*) FROM omnichat.conversations WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_messages_of_the_same_thread_map_to_one_conversation_concurrently(b, db):
    """PersistInbound from many concurrent webhooks of one thread: one conversation, one contact."""
    acct = b.account()
    reqs = [b.inbound(acct, 1_700_000_000_000 + i, user="U-thread", thread_key="T-web")
            for i in range(12)]
    out, lock, barrier = [], threading.Lock(), threading.Barrier(len(reqs))

    def send(item):
        barrier.wait(timeout=30)
        r = b.api.PersistInbound(tenant_id=b.tenant, messages=[item]).results[0]
        with lock:
            out.append(r)

    threads = [threading.Thread(target=send, args=(it,)) for it in reqs]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert len(out) == len(reqs), "some concurrent PersistInbound calls failed"
    assert len({r.conversation_id for r in out}) == 1
    assert len({r.contact_id for r in out}) == 1
    assert len({r.message_id for r in out}) == len(reqs)
    t = sql_lit(b.tenant)
    assert db.count(f"SELECT count(*) FROM omnichat.conversations WHERE tenant_id = {t}") == 1
    assert db.count(f"SELECT count(*) FROM omnichat.contacts WHERE tenant_id = {t}") == 1
    conv = b.api.GetConversation(tenant_id=b.tenant, conversation_id=out[0].conversation_id).conversation
    assert conv.message_count == len(reqs)


def test_conversation_fallback_rule_without_thread_id(b):
    acct = b.account()
    day = 19_700  # days since the epoch
    base = day * DAY_MS
    kw = dict(tenant_id=b.tenant, channel_account_id=acct.channel_account_id, thread_key="",
              external_user_id="U-fb")
    morning = b.api.UpsertConversation(**kw, channel_timestamp_ms=base + 1_000).conversation
    evening = b.api.UpsertConversation(**kw, channel_timestamp_ms=base + DAY_MS - 1).conversation
    next_day = b.api.UpsertConversation(**kw, channel_timestamp_ms=base + DAY_MS).conversation
    assert morning.thread_key == f"fallback:U-fb:{day}"
    assert morning.conversation_id == evening.conversation_id
    assert next_day.conversation_id != morning.conversation_id
    assert next_day.thread_key == f"fallback:U-fb:{day + 1}"
    # An explicit thread key equal to the fallback key is the same conversation.
    same = b.conversation(acct, f"fallback:U-fb:{day}")
    assert same.conversation_id == morning.conversation_id


def test_inbound_messages_without_thread_id_use_the_fallback_rule(b):
    acct = b.account()
    day = 19_800
    base = day * DAY_MS
    r = b.persist(b.inbound(acct, base + 10, user="U-nothread"),
                  b.inbound(acct, base + 3_600_000, user="U-nothread"),
                  b.inbound(acct, base + DAY_MS + 5, user="U-nothread"))
    assert r[0].conversation_id == r[1].conversation_id
    assert r[2].conversation_id != r[0].conversation_id
    assert r[0].contact_id == r[1].contact_id == r[2].contact_id
    conv = b.api.GetConversation(tenant_id=b.tenant, conversation_id=r[0].conversation_id).conversation
    assert conv.thread_key == f"fallback:U-nothread:{day}"
    assert conv.message_count == 2
    conv2 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=r[2].conversation_id).conversation
    assert conv2.thread_key == f"fallback:U-nothread:{day + 1}"


def test_upsert_conversation_links_the_contact(b):
    acct = b.account()
    contact = b.contact(acct, "U-link")
    conv = b.conversation(acct, "T-link", contact=contact)
    assert conv.contact_id == contact.contact_id
    got = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert got.contact_id == contact.contact_id
    assert got.thread_key == "T-link"
    assert got.tenant_id == b.tenant


def test_persist_inbound_creates_contact_conversation_and_message(b):
    acct = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    item = b.inbound(acct, 1_710_000_000_000, user="PSID-1", thread_key="PAGE:PSID-1",
                     ext_id="m_abc", text="Hello there", contact_display_name="Bob",
                     contact_avatar_url="https://cdn.example/bob.png",
                     contact_profile_json='{"locale": "en_US"}')
    [r] = b.persist(item)
    assert r.created
    conv = b.api.GetConversation(tenant_id=b.tenant, conversation_id=r.conversation_id).conversation
    assert conv.thread_key == "PAGE:PSID-1"
    assert conv.contact_id == r.contact_id
    assert conv.channel_type == pb.CHANNEL_TYPE_FACEBOOK
    assert conv.message_count == 1
    assert conv.last_message_at_ms == 1_710_000_000_000
    assert conv.last_message_preview == "Hello there"
    contact = b.api.UpsertContact(tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                                  external_user_id="PSID-1").contact
    assert contact.contact_id == r.contact_id
    assert contact.display_name == "Bob"
    assert contact.avatar_url == "https://cdn.example/bob.png"
    assert json.loads(contact.profile_json) == {"locale": "en_US"}
    [m] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=r.conversation_id).messages
    assert m.message_id == r.message_id
    assert m.direction == pb.DIRECTION_INBOUND
    assert m.idempotency_key == "m_abc"  # default: the external message id
    assert m.external_message_id == "m_abc"
    assert m.sender_type == pb.SENDER_TYPE_CONTACT  # default for inbound
    assert m.sender_display_name == "Bob"  # default: contact display name
    assert m.contact_id == r.contact_id
    assert m.status == pb.MESSAGE_STATUS_RECEIVED
    assert m.channel_account_id == acct.channel_account_id


def test_conversation_preview_is_first_200_characters(b):
    acct = b.account()
    text = "ก" * 150 + "x" * 100  # 250 characters, multibyte first
    [r] = b.persist(b.inbound(acct, 1_700_000_000_000, user="U", thread_key="T", text=text))
    conv = b.api.GetConversation(tenant_id=b.tenant, conversation_id=r.conversation_id).conversation
    assert conv.last_message_preview == text[:200]
