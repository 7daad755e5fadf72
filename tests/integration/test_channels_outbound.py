"""The connectors' RPCs: channel accounts (register, credentials, status, resolve) and the outbound
lifecycle (create-or-get with fingerprint and lease, complete, claim due retries, reconcile)."""
import threading
import time

import grpc
import pytest

from harness import (Builder, assert_code, new_id, now_ms, pb, rpc_error, run_concurrently, sql_lit,
                     wait_leases_expired)

IG = pb.CHANNEL_TYPE_INSTAGRAM  # only the claim tests create due Instagram messages


def cred(field, data, key_id="kek-1"):
    return pb.SealedCredential(field=field, key_id=key_id, ciphertext=data)


# ---------------------------------------------------------------------------------------------
# Channel accounts


def test_register_channel_account_creates_then_gets(b):
    ext = b.uniq("bot")
    r1 = b.api.RegisterChannelAccount(tenant_id=b.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                      external_account_id=ext, display_name="My OA")
    r2 = b.api.RegisterChannelAccount(tenant_id=b.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                      external_account_id=ext, display_name="My OA")
    assert r1.created and not r2.created
    a = r1.channel_account
    assert r2.channel_account.channel_account_id == a.channel_account_id
    assert (a.tenant_id, a.channel_type, a.external_account_id, a.display_name) == \
        (b.tenant, pb.CHANNEL_TYPE_LINE, ext, "My OA")
    got = b.api.GetChannelAccount(tenant_id=b.tenant, channel_account_id=a.channel_account_id).channel_account
    assert got.channel_account_id == a.channel_account_id and got.external_account_id == ext
    # Same external id under another channel type is another account.
    fb = b.account(pb.CHANNEL_TYPE_FACEBOOK, external_account_id=ext)
    assert fb.channel_account_id != a.channel_account_id


def test_register_same_external_account_in_another_tenant_is_already_exists(b, b2, db):
    ext = b.uniq("page")
    b.account(pb.CHANNEL_TYPE_FACEBOOK, external_account_id=ext)
    err = rpc_error(b2.api.RegisterChannelAccount, tenant_id=b2.tenant, channel_type=pb.CHANNEL_TYPE_FACEBOOK,
                    external_account_id=ext, display_name="Hijack")
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS)
    assert db.tenant_counts(b2.tenant)["channel_accounts"] == 0


def test_register_concurrently_yields_one_account(b):
    ext = b.uniq("bot")
    results = run_concurrently(b.api.RegisterChannelAccount, 10, tenant_id=b.tenant,
                               channel_type=pb.CHANNEL_TYPE_LINE, external_account_id=ext, display_name="OA")
    assert len({r.channel_account.channel_account_id for r in results}) == 1
    assert sum(r.created for r in results) == 1


def test_update_credentials_replaces_all_and_sets_active(b, service):
    a = b.account()
    b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                                   credentials=[cred("access_token", b"\x01old-token-ct"),
                                                cred("channel_secret", b"\x02old-secret-ct")])
    b.api.RecordChannelStatus(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                              status=pb.CHANNEL_STATUS_AUTH_FAILED, error_category=pb.ERROR_CATEGORY_AUTH_ERROR)
    marker = b"\x00\xffSEALED-" + new_id().encode()
    r = b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                                       credentials=[cred("access_token", marker, key_id="kek-2")])
    acct = r.channel_account
    assert acct.status == pb.CHANNEL_STATUS_ACTIVE
    assert [(c.field, c.key_id, c.ciphertext) for c in acct.credentials] == [("access_token", "kek-2", marker)]
    got = b.api.GetChannelAccount(tenant_id=b.tenant, channel_account_id=a.channel_account_id).channel_account
    assert [(c.field, c.key_id, c.ciphertext) for c in got.credentials] == [("access_token", "kek-2", marker)]
    assert got.status == pb.CHANNEL_STATUS_ACTIVE
    log = service.log_text()
    # The log scanned is the one this test's calls went to: it holds this tenant's calls.
    assert b.tenant in log, "positive control: the service log holds this test's calls"
    assert "SEALED-" not in log, "credential bytes reached the log"


def test_record_channel_status_auth_failed_then_active(b):
    a = b.account()
    t0 = now_ms()
    f = b.api.RecordChannelStatus(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                                  status=pb.CHANNEL_STATUS_AUTH_FAILED,
                                  error_category=pb.ERROR_CATEGORY_AUTH_ERROR).channel_account
    assert f.status == pb.CHANNEL_STATUS_AUTH_FAILED
    assert f.last_error_category == pb.ERROR_CATEGORY_AUTH_ERROR
    assert f.last_error_at_ms >= t0 - 5000
    got = b.api.GetChannelAccount(tenant_id=b.tenant, channel_account_id=a.channel_account_id).channel_account
    assert got.status == pb.CHANNEL_STATUS_AUTH_FAILED
    ok = b.api.RecordChannelStatus(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                                   status=pb.CHANNEL_STATUS_ACTIVE).channel_account
    assert ok.status == pb.CHANNEL_STATUS_ACTIVE
    assert ok.last_success_at_ms >= t0 - 5000
    # RecordChannelStatus accepts only ACTIVE or AUTH_FAILED.
    err = rpc_error(b.api.RecordChannelStatus, tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                    status=pb.CHANNEL_STATUS_DISABLED)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="status")


def test_resolve_channel_account_by_id_and_by_external_id_without_tenant(b):
    ext = b.uniq("bot")
    a = b.account(pb.CHANNEL_TYPE_LINE, external_account_id=ext)
    by_id = b.api.ResolveChannelAccount(channel_account_id=a.channel_account_id).channel_account
    assert (by_id.channel_account_id, by_id.tenant_id) == (a.channel_account_id, b.tenant)
    by_ext = b.api.ResolveChannelAccount(channel_type=pb.CHANNEL_TYPE_LINE,
                                         external_account_id=ext).channel_account
    assert (by_ext.channel_account_id, by_ext.tenant_id) == (a.channel_account_id, b.tenant)
    for kw in (dict(channel_account_id=new_id()),
               dict(channel_type=pb.CHANNEL_TYPE_FACEBOOK, external_account_id=ext),
               dict(channel_type=pb.CHANNEL_TYPE_LINE, external_account_id=ext + "-nope")):
        assert_code(rpc_error(b.api.ResolveChannelAccount, **kw), grpc.StatusCode.NOT_FOUND)


def test_list_channel_accounts_by_type_in_creation_order(b):
    l1 = b.account(pb.CHANNEL_TYPE_LINE)
    f1 = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    l2 = b.account(pb.CHANNEL_TYPE_LINE)
    every = b.api.ListChannelAccounts(tenant_id=b.tenant).channel_accounts
    assert [a.channel_account_id for a in every] == [l1.channel_account_id, f1.channel_account_id,
                                                     l2.channel_account_id]
    line = b.api.ListChannelAccounts(tenant_id=b.tenant, channel_type=pb.CHANNEL_TYPE_LINE).channel_accounts
    assert [a.channel_account_id for a in line] == [l1.channel_account_id, l2.channel_account_id]


# ---------------------------------------------------------------------------------------------
# Outbound lifecycle


def create(b, conv, key="send-1", fp="fp-1", owner="w1", lease=60, **kw):
    return b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                                idempotency_key=key, request_fingerprint=fp, sender_id="agent-1",
                                sender_display_name="Agent", content_text=kw.pop("text", "reply"),
                                lease_owner=owner, lease_seconds=lease, **kw)


def complete(b, msg, owner="w1", outcome=pb.OUTBOUND_OUTCOME_SENT, **kw):
    return b.api.CompleteOutbound(tenant_id=b.tenant, message_id=msg.message_id, lease_owner=owner,
                                  outcome=outcome, **kw).message


def test_create_outbound_new_message(b, db):
    acct = b.account()
    conv = b.conversation(acct, "U-recipient")
    retry_key = new_id()
    r = create(b, conv, provider_retry_key=retry_key)
    m = r.message
    assert r.created and r.lease_acquired
    assert r.thread_key == "U-recipient"
    assert m.direction == pb.DIRECTION_OUTBOUND
    assert m.status == pb.MESSAGE_STATUS_PENDING
    assert m.conversation_id == conv.conversation_id
    assert m.channel_account_id == acct.channel_account_id
    assert m.idempotency_key == "send-1"
    assert m.provider_retry_key == retry_key
    assert (m.sender_type, m.sender_id, m.sender_display_name) == (pb.SENDER_TYPE_AGENT, "agent-1", "Agent")
    assert m.content_type == pb.CONTENT_TYPE_TEXT and m.content_text == "reply"
    assert db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_create_outbound_same_key_same_fingerprint_returns_existing(b, db):
    conv = b.conversation(b.account())
    r1 = create(b, conv, provider_retry_key=new_id())
    r2 = create(b, conv, owner="w2", provider_retry_key=new_id())
    assert not r2.created
    assert r2.message.message_id == r1.message.message_id
    assert r2.lease_acquired is False, "w1 still holds the lease"
    assert r2.message.provider_retry_key == r1.message.provider_retry_key, "an existing message keeps its key"
    assert db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_create_outbound_same_key_different_fingerprint_is_already_exists(b, db):
    conv = b.conversation(b.account())
    create(b, conv, fp="fp-A")
    err = rpc_error(create, b, conv, fp="fp-B", text="another text")
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS)
    assert db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_create_outbound_concurrent_same_key_one_message_one_lease(b, db):
    conv = b.conversation(b.account())
    results = run_concurrently(create, 20, b, conv, key="race", fp="fp-race")
    assert len({r.message.message_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert sum(r.lease_acquired for r in results) == 1, "exactly one caller may send"
    assert db.count(f"SELECT count(*) FROM omnichat.messages WHERE tenant_id = {sql_lit(b.tenant)}") == 1


def test_create_outbound_takes_over_an_expired_lease(b, db):
    conv = b.conversation(b.account())
    r1 = create(b, conv, owner="w1", lease=1)
    assert r1.lease_acquired
    wait_leases_expired(db, b.tenant, [r1.message.message_id])
    r2 = create(b, conv, owner="w2", lease=60)
    assert not r2.created and r2.lease_acquired, "pending + expired lease: the caller takes it over"
    # w1's lease is gone: it may not complete any more.
    err = rpc_error(complete, b, r1.message, owner="w1", external_message_id="late")
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)
    m = complete(b, r1.message, owner="w2", external_message_id="prov-ok")
    assert m.status == pb.MESSAGE_STATUS_SENT


def test_create_outbound_after_sent_returns_it_without_lease(b):
    conv = b.conversation(b.account())
    r1 = create(b, conv)
    complete(b, r1.message, external_message_id="prov-1")
    r2 = create(b, conv, owner="w9")
    assert not r2.created and not r2.lease_acquired
    assert r2.message.status == pb.MESSAGE_STATUS_SENT
    assert r2.message.external_message_id == "prov-1"


def test_complete_outbound_sent(b):
    conv = b.conversation(b.account())
    t0 = now_ms()
    m0 = create(b, conv).message
    # Outbound messages take their timeline position when requested and keep it.
    assert t0 - 5000 <= m0.channel_timestamp_ms <= now_ms() + 5000
    time.sleep(0.01)  # 10 ms: a timestamp taken again at completion would differ
    m = complete(b, m0, external_message_id="prov-sent")
    assert m.status == pb.MESSAGE_STATUS_SENT
    assert m.external_message_id == "prov-sent"
    assert m.channel_timestamp_ms == m0.channel_timestamp_ms
    assert m.attempts == 1
    assert m.error_category == pb.ERROR_CATEGORY_UNSPECIFIED
    # Already SENT: a repeated completion (response lost, connector retries) returns it as is.
    again = complete(b, m0, owner="w1", outcome=pb.OUTBOUND_OUTCOME_FAILED,
                     error_category=pb.ERROR_CATEGORY_PROVIDER_ERROR)
    assert again.status == pb.MESSAGE_STATUS_SENT and again.external_message_id == "prov-sent"
    assert again.attempts == 1


def test_complete_outbound_failed(b):
    conv = b.conversation(b.account())
    m0 = create(b, conv).message
    m = complete(b, m0, outcome=pb.OUTBOUND_OUTCOME_FAILED, error_category=pb.ERROR_CATEGORY_AUTH_ERROR,
                 error_detail="401 invalid token")
    assert m.status == pb.MESSAGE_STATUS_FAILED
    assert m.error_category == pb.ERROR_CATEGORY_AUTH_ERROR
    assert m.attempts == 1
    again = complete(b, m0, outcome=pb.OUTBOUND_OUTCOME_SENT, external_message_id="x")
    assert again.status == pb.MESSAGE_STATUS_FAILED and again.external_message_id == ""


def test_complete_outbound_retry_schedules_next_attempt(b):
    conv = b.conversation(b.account())
    m0 = create(b, conv).message
    nxt = now_ms() + 120_000
    m = complete(b, m0, outcome=pb.OUTBOUND_OUTCOME_RETRY, error_category=pb.ERROR_CATEGORY_RATE_LIMIT_ERROR,
                 next_attempt_at_ms=nxt)
    assert m.status == pb.MESSAGE_STATUS_PENDING
    assert m.next_attempt_at_ms == nxt
    assert m.error_category == pb.ERROR_CATEGORY_RATE_LIMIT_ERROR
    assert m.attempts == 1
    # The lease is released: the same owner no longer holds it.
    err = rpc_error(complete, b, m0, outcome=pb.OUTBOUND_OUTCOME_SENT, external_message_id="x")
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)


def test_complete_outbound_unknown(b):
    conv = b.conversation(b.account())
    m0 = create(b, conv).message
    nxt = now_ms() + 60_000
    m = complete(b, m0, outcome=pb.OUTBOUND_OUTCOME_UNKNOWN, error_category=pb.ERROR_CATEGORY_TIMEOUT,
                 next_attempt_at_ms=nxt)
    assert m.status == pb.MESSAGE_STATUS_UNKNOWN
    assert m.error_category == pb.ERROR_CATEGORY_TIMEOUT
    assert m.next_attempt_at_ms == nxt
    assert m.provider_retry_key == m0.provider_retry_key


def test_complete_outbound_by_stale_lease_owner_is_failed_precondition(b):
    conv = b.conversation(b.account())
    m0 = create(b, conv, owner="w1").message
    err = rpc_error(complete, b, m0, owner="w-stale", external_message_id="x")
    assert_code(err, grpc.StatusCode.FAILED_PRECONDITION)
    m = b.api.ListMessages(tenant_id=b.tenant, conversation_id=conv.conversation_id).messages[0]
    assert m.status == pb.MESSAGE_STATUS_PENDING and m.external_message_id == ""


def test_complete_outbound_unknown_message_is_not_found(b):
    err = rpc_error(b.api.CompleteOutbound, tenant_id=b.tenant, message_id=new_id(), lease_owner="w",
                    outcome=pb.OUTBOUND_OUTCOME_SENT)
    assert_code(err, grpc.StatusCode.NOT_FOUND)


def test_reconcile_outbound_marks_sent(b):
    conv = b.conversation(b.account(pb.CHANNEL_TYPE_FACEBOOK), "PAGE:PSID")
    m0 = create(b, conv).message
    complete(b, m0, outcome=pb.OUTBOUND_OUTCOME_UNKNOWN, error_category=pb.ERROR_CATEGORY_TIMEOUT,
             next_attempt_at_ms=now_ms() + 600_000)
    m = b.api.ReconcileOutbound(tenant_id=b.tenant, message_id=m0.message_id,
                                external_message_id="m_echo").message
    assert m.status == pb.MESSAGE_STATUS_SENT
    assert m.external_message_id == "m_echo"
    assert m.channel_timestamp_ms == m0.channel_timestamp_ms
    again = b.api.ReconcileOutbound(tenant_id=b.tenant, message_id=m0.message_id,
                                    external_message_id="m_other").message
    assert again.status == pb.MESSAGE_STATUS_SENT and again.external_message_id == "m_echo"
    err = rpc_error(b.api.ReconcileOutbound, tenant_id=b.tenant, message_id=new_id(), external_message_id="x")
    assert_code(err, grpc.StatusCode.NOT_FOUND)


# ---------------------------------------------------------------------------------------------
# ClaimDueOutbound (Instagram only, so other modules' leftovers cannot interfere)


def drain(api):
    """Lease every currently due Instagram message for an hour, out of the way."""
    for _ in range(100):
        r = api.ClaimDueOutbound(channel_type=IG, limit=100, lease_owner="drain", lease_seconds=3600)
        if not r.claimed:
            return
    raise AssertionError("could not drain due Instagram messages")


def make_due(b, conv, n, prefix="due"):
    """n outbound messages that are due now (RETRY with next_attempt_at in the past)."""
    ids = []
    for i in range(n):
        m = create(b, conv, key=f"{prefix}-{i}", fp=f"fp-{i}", owner="creator").message
        complete(b, m, owner="creator", outcome=pb.OUTBOUND_OUTCOME_RETRY,
                 error_category=pb.ERROR_CATEGORY_NETWORK_ERROR, next_attempt_at_ms=now_ms() - 1000)
        ids.append(m.message_id)
    return ids


def claim(api, owner, limit=100, lease=60, tenant=None):
    r = api.ClaimDueOutbound(channel_type=IG, limit=limit, lease_owner=owner, lease_seconds=lease)
    return [c for c in r.claimed if tenant is None or c.message.tenant_id == tenant]


def test_claim_due_outbound_returns_due_messages_once(b):
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-1")
    ids = make_due(b, conv, 5)
    # Not due: scheduled later, sent, failed.
    later = create(b, conv, key="later", fp="l", owner="creator").message
    complete(b, later, owner="creator", outcome=pb.OUTBOUND_OUTCOME_RETRY,
             error_category=pb.ERROR_CATEGORY_NETWORK_ERROR, next_attempt_at_ms=now_ms() + 3_600_000)
    sent = create(b, conv, key="sent", fp="s", owner="creator").message
    complete(b, sent, owner="creator", external_message_id="ok")
    failed = create(b, conv, key="failed", fp="f", owner="creator").message
    complete(b, failed, owner="creator", outcome=pb.OUTBOUND_OUTCOME_FAILED,
             error_category=pb.ERROR_CATEGORY_RECIPIENT_ERROR)
    # A due LINE message of the same tenant is not an Instagram one.
    line_conv = b.conversation(b.account(pb.CHANNEL_TYPE_LINE), "U-line")
    make_due(b, line_conv, 1, prefix="line")

    got = claim(b.api, "worker-1", tenant=b.tenant)
    assert sorted(c.message.message_id for c in got) == sorted(ids)
    for c in got:
        assert c.thread_key == "IGSID-1"
        assert c.message.direction == pb.DIRECTION_OUTBOUND
        assert c.message.status == pb.MESSAGE_STATUS_PENDING
    assert claim(b.api, "worker-2", tenant=b.tenant) == [], "leased messages were claimed again"
    # The claimer holds the lease now: it completes; the creator's old lease is stale.
    assert_code(rpc_error(complete, b, got[0].message, owner="creator", external_message_id="x"),
                grpc.StatusCode.FAILED_PRECONDITION)
    m = complete(b, got[0].message, owner="worker-1", external_message_id="prov-claimed")
    assert m.status == pb.MESSAGE_STATUS_SENT and m.attempts == 2


def test_claim_due_outbound_respects_limit(b):
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-2")
    ids = make_due(b, conv, 7)
    first = claim(b.api, "w1", limit=3)
    assert len(first) == 3
    rest = claim(b.api, "w2", limit=100)
    assert sorted(c.message.message_id for c in first + rest) == sorted(ids)


def test_claim_due_outbound_lease_expiry_makes_message_due_again(b, db):
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-3")
    ids = make_due(b, conv, 2)
    got = claim(b.api, "w-crash", lease=1, tenant=b.tenant)
    assert sorted(c.message.message_id for c in got) == sorted(ids)
    assert claim(b.api, "w-next", tenant=b.tenant) == []
    wait_leases_expired(db, b.tenant, ids)
    again = claim(b.api, "w-next", tenant=b.tenant)
    assert sorted(c.message.message_id for c in again) == sorted(ids), "expired lease not honoured"
    assert_code(rpc_error(complete, b, again[0].message, owner="w-crash", external_message_id="x"),
                grpc.StatusCode.FAILED_PRECONDITION)


def test_unknown_outcome_is_claimed_again_when_due(b):
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-4")
    m = create(b, conv, key="unk", fp="u", owner="creator").message
    complete(b, m, owner="creator", outcome=pb.OUTBOUND_OUTCOME_UNKNOWN,
             error_category=pb.ERROR_CATEGORY_TIMEOUT, next_attempt_at_ms=now_ms() - 1)
    [c] = claim(b.api, "w1", tenant=b.tenant)
    assert c.message.message_id == m.message_id
    assert c.message.status == pb.MESSAGE_STATUS_UNKNOWN
    assert c.message.provider_retry_key == m.provider_retry_key


def test_concurrent_claimers_never_get_the_same_message(b):
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-5")
    ids = make_due(b, conv, 30)
    lock = threading.Lock()
    claimed = []
    barrier = threading.Barrier(6)
    errors = []

    def worker(n):
        try:
            barrier.wait(timeout=30)
            while True:
                got = claim(b.api, f"w{n}", limit=4)
                if not got:
                    return
                with lock:
                    claimed.extend((f"w{n}", c.message.message_id) for c in got)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert not errors, errors[0]
    mids = [mid for _, mid in claimed]
    dup = {m for m in mids if mids.count(m) > 1}
    assert not dup, f"{len(dup)} messages claimed by two workers"
    assert sorted(mids) == sorted(ids)


def test_final_unknown_is_never_claimed_or_taken_over(b):
    """UNKNOWN without a next attempt is settled for good: nobody sends it again."""
    drain(b.api)
    conv = b.conversation(b.account(IG), "IGSID-final")
    m = create(b, conv, key="final-unk", fp="fu", owner="creator", lease=1).message
    done = complete(b, m, owner="creator", outcome=pb.OUTBOUND_OUTCOME_UNKNOWN,
                    error_category=pb.ERROR_CATEGORY_TIMEOUT, error_detail="retry window closed")
    assert done.status == pb.MESSAGE_STATUS_UNKNOWN and done.next_attempt_at_ms == 0
    # 1.2 s: past the creator's 1 s lease, so that lease cannot be what keeps it from a claim
    # or a takeover below.
    time.sleep(1.2)
    assert claim(b.api, "w1", tenant=b.tenant) == []
    again = create(b, conv, key="final-unk", fp="fu", owner="retrier", lease=30)
    assert not again.created and not again.lease_acquired
    assert again.message.status == pb.MESSAGE_STATUS_UNKNOWN


def test_retry_still_requires_a_next_attempt(b):
    conv = b.conversation(b.account(), "U-retry-next")
    m = create(b, conv, key="r-next", fp="rn").message
    err = rpc_error(complete, b, m, outcome=pb.OUTBOUND_OUTCOME_RETRY,
                    error_category=pb.ERROR_CATEGORY_PROVIDER_ERROR)
    assert_code(err, grpc.StatusCode.INVALID_ARGUMENT, field="next_attempt_at_ms")


def test_new_account_is_auth_failed_until_credentials_are_stored(b):
    """A connect that dies between register and credentials never looks usable."""
    r = b.api.RegisterChannelAccount(tenant_id=b.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                     external_account_id=b.uniq("bot"), display_name="New OA")
    a = r.channel_account
    assert r.created and a.status == pb.CHANNEL_STATUS_AUTH_FAILED and not a.credentials
    up = b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=a.channel_account_id,
                                        credentials=[cred("access_token", b"\x01ct")]).channel_account
    assert up.status == pb.CHANNEL_STATUS_ACTIVE


def test_auth_failed_guard_ignores_failures_seen_with_replaced_credentials(b):
    """A 401 observed with the old token must not mark the freshly replaced credentials."""
    a = b.account()
    acc_id = a.channel_account_id
    old_ct = b"\x01old-token-ciphertext"
    b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=acc_id,
                                   credentials=[cred("access_token", old_ct)])
    # Credentials replaced meanwhile (a reconnect), then the stale failure arrives.
    b.api.UpdateChannelCredentials(tenant_id=b.tenant, channel_account_id=acc_id,
                                   credentials=[cred("access_token", b"\x01new-token-ciphertext")])
    stale = b.api.RecordChannelStatus(tenant_id=b.tenant, channel_account_id=acc_id,
                                      status=pb.CHANNEL_STATUS_AUTH_FAILED,
                                      error_category=pb.ERROR_CATEGORY_AUTH_ERROR,
                                      if_credential_field="access_token",
                                      if_credential_ciphertext=old_ct).channel_account
    assert stale.status == pb.CHANNEL_STATUS_ACTIVE
    # With the current ciphertext the guard holds and the failure is recorded.
    cur = b.api.RecordChannelStatus(tenant_id=b.tenant, channel_account_id=acc_id,
                                    status=pb.CHANNEL_STATUS_AUTH_FAILED,
                                    error_category=pb.ERROR_CATEGORY_AUTH_ERROR,
                                    if_credential_field="access_token",
                                    if_credential_ciphertext=b"\x01new-token-ciphertext").channel_account
    assert cur.status == pb.CHANNEL_STATUS_AUTH_FAILED
    assert cur.last_error_category == pb.ERROR_CATEGORY_AUTH_ERROR
