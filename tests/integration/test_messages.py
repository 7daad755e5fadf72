"""InsertMessage / PersistInbound / AddAttachments: idempotency (also under concurrency), scoping of
keys by tenant + channel account + direction, outbound messages, attachments."""
import json

from harness import pb, run_concurrently, sql_lit

TS = 1_700_000_000_000


def count_messages(db, tenant, where=""):
    return db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(tenant)} {where}")


def test_insert_message_twice_returns_existing_message_id(b, db):
    conv = b.conversation(b.account())
    req = b.message_request(conv, TS, key="mid-1", text="first")
    r1 = b.api.InsertMessage(req)
    r2 = b.api.InsertMessage(req)
    assert r1.created is True and r2.created is False
    assert r1.message.message_id == r2.message.message_id
    assert r2.message.content_text == "first"
    assert count_messages(db, b.tenant) == 1
    conv2 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert conv2.message_count == 1, "a replayed insert must not count twice"


def test_insert_message_replay_with_other_content_keeps_the_stored_message(b, db):
    """The key decides: a webhook retry with a different body does not create or overwrite."""
    conv = b.conversation(b.account())
    r1 = b.message(conv, TS, key="mid-x", text="original")
    r2 = b.message(conv, TS + 5, key="mid-x", text="changed")
    assert not r2.created
    assert r2.message.message_id == r1.message.message_id
    assert r2.message.content_text == "original"
    assert count_messages(db, b.tenant) == 1


def test_insert_message_50_concurrent_identical_calls_create_one_row(b, db):
    conv = b.conversation(b.account())
    req = b.message_request(conv, TS, key="mid-race", text="race")
    results = run_concurrently(b.api.InsertMessage, 50, req)
    ids = {r.message.message_id for r in results}
    assert len(ids) == 1, f"{len(ids)} different message ids"
    created = [r.created for r in results]
    assert created.count(True) == 1, f"created=true {created.count(True)} times"
    assert count_messages(db, b.tenant) == 1
    conv2 = b.api.GetConversation(tenant_id=b.tenant, conversation_id=conv.conversation_id).conversation
    assert conv2.message_count == 1


def test_persist_inbound_same_webhook_twice_stores_one_message(b, db):
    acct = b.account()
    items = [b.inbound(acct, TS + i, user="U1", thread_key="T1", ext_id=f"mid-{i}") for i in range(3)]
    first = b.persist(*items)
    second = b.persist(*items)
    assert [r.created for r in first] == [True] * 3
    assert [r.created for r in second] == [False] * 3
    assert [r.message_id for r in first] == [r.message_id for r in second]
    assert [r.conversation_id for r in first] == [r.conversation_id for r in second]
    assert count_messages(db, b.tenant) == 3


def test_persist_inbound_results_follow_request_order(b):
    acct = b.account()
    items = [b.inbound(acct, TS + 1000 - i, user=f"U{i % 3}", thread_key=f"T{i % 3}",
                       ext_id=f"ord-{i}") for i in range(10)]
    results = b.persist(*items)
    assert len(results) == 10
    for i, r in enumerate(results):
        conv = b.api.GetConversation(tenant_id=b.tenant, conversation_id=r.conversation_id).conversation
        assert conv.thread_key == f"T{i % 3}"
    msgs = {m.message_id: m for i in range(3)
            for m in b.api.ListMessages(tenant_id=b.tenant, conversation_id=results[i].conversation_id,
                                        page_size=200).messages}
    for i, r in enumerate(results):
        assert msgs[r.message_id].external_message_id == f"ord-{i}"


def test_persist_inbound_100_messages_in_one_call(b, db):
    acct = b.account()
    items = [b.inbound(acct, TS + i, user=f"U{i % 7}", thread_key=f"T{i % 7}") for i in range(100)]
    results = b.persist(*items)
    assert len(results) == 100 and all(r.created for r in results)
    assert count_messages(db, b.tenant) == 100
    assert db.count(f"SELECT count(*) FROM omnichat.conversations WHERE tenant_id = {sql_lit(b.tenant)}") == 7


def test_same_external_message_id_in_two_channel_accounts_is_two_messages(b, db):
    a1, a2 = b.account(), b.account()
    r = b.persist(b.inbound(a1, TS, user="U", thread_key="T", ext_id="mid-shared"),
                  b.inbound(a2, TS, user="U", thread_key="T", ext_id="mid-shared"))
    assert r[0].created and r[1].created
    assert r[0].message_id != r[1].message_id
    assert r[0].conversation_id != r[1].conversation_id
    assert count_messages(db, b.tenant, "AND external_message_id = 'mid-shared'") == 2


def test_same_external_message_id_in_two_tenants_is_two_messages(b, b2, db):
    a1 = b.account()
    a2 = b2.account()
    [r1] = b.persist(b.inbound(a1, TS, user="U", thread_key="T", ext_id="mid-tenants"))
    [r2] = b2.persist(b2.inbound(a2, TS, user="U", thread_key="T", ext_id="mid-tenants"))
    assert r1.created and r2.created
    assert r1.message_id != r2.message_id
    assert count_messages(db, b.tenant) == 1
    assert count_messages(db, b2.tenant) == 1


def test_same_key_inbound_and_outbound_are_two_messages(b, db):
    conv = b.conversation(b.account())
    r_in = b.message(conv, TS, key="k-dir", direction=pb.DIRECTION_INBOUND)
    r_out = b.message(conv, TS + 1, key="k-dir", direction=pb.DIRECTION_OUTBOUND)
    assert r_in.created and r_out.created
    assert r_in.message.message_id != r_out.message.message_id
    assert count_messages(db, b.tenant) == 2


def test_outbound_insert_is_stored_as_outbound_linked_to_conversation_and_account(b, db):
    acct = b.account()
    conv = b.conversation(acct, "T-out")
    r = b.message(conv, TS, key="agent-key-1", direction=pb.DIRECTION_OUTBOUND,
                  sender_type=pb.SENDER_TYPE_AGENT, sender_id="agent-7",
                  sender_display_name="Agent Seven", text="Hi, how can I help?",
                  external_message_id="prov-1")
    m = r.message
    assert r.created
    assert m.direction == pb.DIRECTION_OUTBOUND
    assert m.conversation_id == conv.conversation_id
    assert m.channel_account_id == acct.channel_account_id
    assert m.status == pb.MESSAGE_STATUS_SENT  # default for outbound InsertMessage
    assert m.sender_type == pb.SENDER_TYPE_AGENT
    assert m.sender_display_name == "Agent Seven"
    assert m.sender_id == "agent-7"
    # Checked in the database too, not only in the response.
    [row] = db.rows(f"SELECT direction::text, conversation_id::text, channel_account_id::text "
                    f"FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}")
    assert "out" in row[0].lower() or row[0] == "2", row
    assert row[1:] == [conv.conversation_id, acct.channel_account_id]
    # And it is part of the timeline.
    [t] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id).messages
    assert t.message_id == m.message_id and t.direction == pb.DIRECTION_OUTBOUND


def test_inbound_default_status_is_received_and_contact_defaults_to_conversation_contact(b):
    acct = b.account()
    contact = b.contact(acct, "U-c")
    conv = b.conversation(acct, "T-c", contact=contact)
    m = b.message(conv, TS).message
    assert m.status == pb.MESSAGE_STATUS_RECEIVED
    assert m.direction == pb.DIRECTION_INBOUND
    assert m.contact_id == contact.contact_id


def test_insert_message_with_matching_channel_account_id(b):
    acct = b.account()
    conv = b.conversation(acct)
    m = b.message(conv, TS, channel_account_id=acct.channel_account_id).message
    assert m.channel_account_id == acct.channel_account_id


def test_insert_message_with_another_accounts_id_writes_nothing(b, db):
    acct, other = b.account(), b.account()
    conv = b.conversation(acct)
    before = count_messages(db, b.tenant)
    try:
        b.message(conv, TS, channel_account_id=other.channel_account_id)
    except Exception as e:  # grpc.RpcError
        assert e.code().name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND"), e
    else:
        raise AssertionError("InsertMessage accepted a channel_account_id that is not the "
                             "conversation's")
    assert count_messages(db, b.tenant) == before


def test_insert_message_with_attachments_and_unsupported_content_kept(b):
    conv = b.conversation(b.account())
    raw = {"type": "template", "payload": {"buttons": [{"title": "A"}, {"title": "B"}]}}
    r = b.message(conv, TS, content_type=pb.CONTENT_TYPE_UNSUPPORTED, text="",
                  content_struct_json=json.dumps(raw),
                  attachments=[pb.AttachmentInput(kind="image", url="https://cdn.example/1.jpg",
                                                  mime_type="image/jpeg", size_bytes=1234,
                                                  name="1.jpg", metadata_json='{"w": 10}'),
                               pb.AttachmentInput(kind="file", url="https://cdn.example/2.pdf")])
    m = r.message
    assert m.content_type == pb.CONTENT_TYPE_UNSUPPORTED
    assert json.loads(m.content_struct_json) == raw
    assert [a.kind for a in m.attachments] == ["image", "file"]
    a0 = m.attachments[0]
    assert (a0.url, a0.mime_type, a0.size_bytes, a0.name) == \
        ("https://cdn.example/1.jpg", "image/jpeg", 1234, "1.jpg")
    assert json.loads(a0.metadata_json) == {"w": 10}
    assert all(a.message_id == m.message_id for a in m.attachments)
    [t] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id).messages
    assert [a.kind for a in t.attachments] == ["image", "file"]
    assert json.loads(t.content_struct_json) == raw


def test_add_attachments_to_existing_message_is_idempotent_by_ordinal(b, db):
    conv = b.conversation(b.account())
    m = b.message(conv, TS).message
    atts = [pb.AttachmentInput(kind="image", url="https://cdn.example/a.png", ordinal=1),
            pb.AttachmentInput(kind="video", url="https://cdn.example/b.mp4", ordinal=2)]
    r1 = b.api.AddAttachments(tenant_id=b.tenant, message_id=m.message_id, attachments=atts)
    assert [(a.ordinal, a.kind) for a in r1.attachments] == [(1, "image"), (2, "video")]
    r2 = b.api.AddAttachments(tenant_id=b.tenant, message_id=m.message_id, attachments=atts)
    assert [a.attachment_id for a in r2.attachments] == [a.attachment_id for a in r1.attachments]
    r3 = b.api.AddAttachments(tenant_id=b.tenant, message_id=m.message_id,
                              attachments=[pb.AttachmentInput(kind="file", ordinal=3,
                                                              url="https://cdn.example/c.pdf")])
    assert [(a.ordinal, a.kind) for a in r3.attachments] == [(1, "image"), (2, "video"), (3, "file")]
    assert db.count(f"SELECT count(*) FROM omnichat.attachments WHERE tenant_id = {sql_lit(b.tenant)}") == 3
    [t] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id).messages
    assert [a.kind for a in t.attachments] == ["image", "video", "file"]


def test_add_attachments_to_unknown_message_is_not_found(b, db):
    import grpc
    from harness import assert_code, new_id, rpc_error
    err = rpc_error(b.api.AddAttachments, tenant_id=b.tenant, message_id=new_id(),
                    attachments=[pb.AttachmentInput(kind="image", url="https://x.example/i")])
    assert_code(err, grpc.StatusCode.NOT_FOUND)
    assert db.count(f"SELECT count(*) FROM omnichat.attachments WHERE tenant_id = {sql_lit(b.tenant)}") == 0


def test_persist_inbound_attachments_are_stored(b):
    acct = b.account()
    [r] = b.persist(b.inbound(acct, TS, user="U", thread_key="T", content_type=pb.CONTENT_TYPE_IMAGE,
                              text="", attachments=[pb.AttachmentInput(kind="image",
                                                                       url="https://cdn.example/x.jpg")]))
    [m] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=r.conversation_id).messages
    assert m.content_type == pb.CONTENT_TYPE_IMAGE
    assert [(a.kind, a.url) for a in m.attachments] == [("image", "https://cdn.example/x.jpg")]


def test_persist_inbound_outbound_echo_sent_elsewhere(b):
    acct = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    [r] = b.persist(b.inbound(acct, TS, user="PSID", thread_key="PAGE:PSID", ext_id="m_echo",
                              direction=pb.DIRECTION_OUTBOUND, text="sent from the page inbox"))
    [m] = b.api.ListMessages(tenant_id=b.tenant, conversation_id=r.conversation_id).messages
    assert m.direction == pb.DIRECTION_OUTBOUND
    assert m.sender_type == pb.SENDER_TYPE_AGENT  # default for outbound
    assert m.channel_account_id == acct.channel_account_id


def test_batches_naming_the_same_users_in_any_order_never_deadlock(b, db, cluster):
    """Each item locks its conversation until commit: items are taken in one global order, so
    concurrent batches with the same users in different orders never wait in a circle."""
    import os
    import random
    import threading

    acct = b.account()
    users = [f"U-lock-{i}" for i in range(10)]
    b.persist(*[b.inbound(acct, 1_700_000_000_000, user=u, thread_key=u, ext_id=f"seed-{u}")
                for u in users])  # conversations exist before the race
    # The server logs every deadlock it breaks, at once, from the backend that found it (the
    # pg_stat_database counter would need a wait for the statistics to be flushed).
    server_log = os.path.join(cluster.dir, "postgres.log")
    log_start = os.path.getsize(server_log)
    errors = []

    def worker(w):
        rnd = random.Random(w)
        for k in range(8):
            order = users[:]
            rnd.shuffle(order)
            items = [b.inbound(acct, 1_700_000_000_000 + w * 100 + k, user=u, thread_key=u,
                               ext_id=f"w{w}-b{k}-{u}") for u in order]
            try:
                b.persist(*items)
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with open(server_log, "r", errors="replace") as f:
        f.seek(log_start)
        new_log = f.read()
    assert "deadlock detected" not in new_log, "PersistInbound batches deadlocked:\n" + new_log
    assert db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}") \
        == 10 + 8 * 8 * 10
