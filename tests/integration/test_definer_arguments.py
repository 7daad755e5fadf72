"""The SECURITY DEFINER functions, called directly as the runtime role (as any code holding the
service's database connection could): every bad argument raises INVALID_ARGUMENT (OCIA0) and
changes nothing. Migration 0003 added these checks; before it,
claim_due_outbound('facebook', NULL, 'evil', 2147483647) leased every due Facebook message of
every tenant until 2094."""
import subprocess

import pytest

from harness import PSQL, now_ms, pb

FB = pb.CHANNEL_TYPE_FACEBOOK  # nothing else in the suite makes Facebook messages due

# The definer functions this file covers. A new one must get its argument checks and its cases
# here: test_every_definer_function_is_covered fails until it does.
COVERED = {"claim_due_outbound", "claim_due_outbound_types", "claim_webhook_route",
           "resolve_channel_account", "retry_queue_depth"}

BAD_CLAIMS = {
    "type NULL": "NULL, 10, 'w', 60",
    "type unknown": "'twitter', 10, 'w', 60",
    "type empty": "'', 10, 'w', 60",
    "type upper case": "'FACEBOOK', 10, 'w', 60",
    "limit NULL (no limit)": "'facebook', NULL, 'w', 60",
    "limit 0": "'facebook', 0, 'w', 60",
    "limit negative": "'facebook', -1, 'w', 60",
    "limit above 100": "'facebook', 101, 'w', 60",
    "limit int max": "'facebook', 2147483647, 'w', 60",
    "owner NULL": "'facebook', 10, NULL, 60",
    "owner empty": "'facebook', 10, '', 60",
    "owner 129 bytes": f"'facebook', 10, '{'o' * 129}', 60",
    "owner 65 two-byte chars": f"'facebook', 10, '{'é' * 65}', 60",
    "lease NULL": "'facebook', 10, 'w', NULL",
    "lease 0": "'facebook', 10, 'w', 0",
    "lease negative": "'facebook', 10, 'w', -60",
    "lease above 3600": "'facebook', 10, 'w', 3601",
    "the issue's call": "'facebook', NULL, 'evil', 2147483647",
}

# The list form (0004): the same limit, owner and lease cases, and a type list that must name
# 1 to 3 known types.
BAD_TYPED_CLAIMS = {
    "types NULL": "NULL, 10, 'w', 60",
    "types empty": "'{}', 10, 'w', 60",
    "type unknown": "'{facebook,twitter}', 10, 'w', 60",
    "type NULL in the list": "'{facebook,NULL}', 10, 'w', 60",
    "type upper case": "'{FACEBOOK}', 10, 'w', 60",
    "four types": "'{line,facebook,instagram,line}', 10, 'w', 60",
    **{what: "'{facebook}'" + args[args.index(","):]
       for what, args in BAD_CLAIMS.items() if not what.startswith("type")},
}

BAD_RESOLVES = {
    "all NULL": "NULL, NULL, NULL",
    "type NULL": "NULL, NULL, 'ext'",
    "type unknown": "NULL, 'twitter', 'ext'",
    "external NULL": "NULL, 'facebook', NULL",
    "external empty": "NULL, 'facebook', ''",
    "external 257 bytes": f"NULL, 'facebook', '{'e' * 257}'",
    "id with type": "'00000000-0000-4000-8000-000000000000', 'facebook', NULL",
    "id with external": "'00000000-0000-4000-8000-000000000000', NULL, 'ext'",
}

# The /metrics count of the retry queue (0007): only the cap, which bounds the rows it reads.
BAD_QUEUE_CAPS = {"cap NULL (no bound)": "NULL", "cap 0": "0", "cap negative": "-1",
                  "cap above 1000000": "1000001", "cap int max": "2147483647"}

# claim_webhook_route (0006) as (type, external id, account), after the tenant is set; {ext}
# and {acct} are the test account's own, so only the named argument is wrong.
BAD_ROUTE_CLAIMS = {
    "type NULL": "NULL, '{ext}', '{acct}'",
    "type unknown": "'twitter', '{ext}', '{acct}'",
    "type upper case": "'LINE', '{ext}', '{acct}'",
    "external NULL": "'line', NULL, '{acct}'",
    "external empty": "'line', '', '{acct}'",
    "external 257 bytes": f"'line', '{'e' * 257}', '{{acct}}'",
    "account NULL": "'line', '{ext}', NULL",
}


def psql_app(cluster, sql):
    """Runs sql as the runtime login role; returns (ok, stdout, stderr), stderr with SQLSTATE."""
    r = subprocess.run([PSQL, cluster.dsn("app"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                        "-v", "VERBOSITY=verbose", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    return r.returncode == 0, r.stdout, r.stderr


def outbound_state(db):
    """Lease and status of every outbound message, every tenant: what a claim could change."""
    return db.rows("SELECT tenant_id, id, status, lease_owner, lease_until, updated_at "
                   "FROM omnichat.messages WHERE direction = 'outbound' ORDER BY tenant_id, id")


@pytest.fixture
def due_fb(b):
    """A Facebook account of this test's tenant with one outbound message that is due now."""
    acct = b.account(FB)
    conv = b.conversation(acct, "PAGE:PSID-definer")
    m = b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                             idempotency_key=b.uniq("definer"), request_fingerprint="fp",
                             content_text="reply", lease_owner="creator", lease_seconds=60).message
    b.api.CompleteOutbound(tenant_id=b.tenant, message_id=m.message_id, lease_owner="creator",
                           outcome=pb.OUTBOUND_OUTCOME_RETRY,
                           error_category=pb.ERROR_CATEGORY_NETWORK_ERROR,
                           next_attempt_at_ms=now_ms() - 1000)
    return acct, m


def test_every_definer_function_is_covered(db):
    names = {r[0] for r in db.rows("SELECT p.proname FROM pg_proc p JOIN pg_namespace n "
                                   "ON n.oid = p.pronamespace WHERE n.nspname = 'omnichat' "
                                   "AND p.prosecdef")}
    assert names == COVERED, f"SECURITY DEFINER functions: {sorted(names)}"


def test_claim_due_outbound_refuses_every_bad_argument_and_changes_nothing(cluster, db, due_fb, b):
    _, msg = due_fb
    before = outbound_state(db)
    for what, args in BAD_CLAIMS.items():
        ok, out, err = psql_app(cluster, f"SELECT id FROM omnichat.claim_due_outbound({args})")
        assert not ok, f"{what}: claim_due_outbound({args}) was accepted and returned {out!r}"
        assert "OCIA0" in err, f"{what}: expected INVALID_ARGUMENT (OCIA0), got {err!r}"
        assert outbound_state(db) == before, f"{what}: a refused claim changed outbound rows"
    # Positive control: the same role with good arguments leases this test's due message, so
    # the refusals above were the checks, not a missing grant or nothing being due.
    ok, out, err = psql_app(cluster, "SELECT id FROM omnichat.claim_due_outbound("
                                     "'facebook', 100, 'definer-control', 60)")
    assert ok, err
    assert msg.message_id in out.split()
    assert outbound_state(db) != before


def test_claim_due_outbound_types_refuses_every_bad_argument_and_changes_nothing(cluster, db,
                                                                                due_fb, b):
    _, msg = due_fb
    before = outbound_state(db)
    for what, args in BAD_TYPED_CLAIMS.items():
        ok, out, err = psql_app(cluster,
                                f"SELECT id FROM omnichat.claim_due_outbound_types({args})")
        assert not ok, f"{what}: claim_due_outbound_types({args}) was accepted: {out!r}"
        assert "OCIA0" in err, f"{what}: expected INVALID_ARGUMENT (OCIA0), got {err!r}"
        assert outbound_state(db) == before, f"{what}: a refused claim changed outbound rows"
    # Positive control: good arguments lease this test's due message.
    ok, out, err = psql_app(cluster, "SELECT id FROM omnichat.claim_due_outbound_types("
                                     "'{facebook,instagram}', 100, 'definer-control', 60)")
    assert ok, err
    assert msg.message_id in out.split()
    assert outbound_state(db) != before


def test_resolve_channel_account_refuses_every_bad_argument(cluster, due_fb):
    acct, _ = due_fb
    for what, args in BAD_RESOLVES.items():
        ok, out, err = psql_app(cluster, f"SELECT id FROM omnichat.resolve_channel_account({args})")
        assert not ok, f"{what}: resolve_channel_account({args}) was accepted and returned {out!r}"
        assert "OCIA0" in err, f"{what}: expected INVALID_ARGUMENT (OCIA0), got {err!r}"
    # Positive control: both good shapes find the account as the runtime role.
    ok, out, err = psql_app(cluster, "SELECT id FROM omnichat.resolve_channel_account("
                                     f"'{acct.channel_account_id}', NULL, NULL)")
    assert ok and out.split() == [acct.channel_account_id], err
    ok, out, err = psql_app(cluster, "SELECT id FROM omnichat.resolve_channel_account("
                                     f"NULL, 'facebook', '{acct.external_account_id}')")
    assert ok and out.split() == [acct.channel_account_id], err


def test_retry_queue_depth_refuses_every_bad_cap(cluster, db, b):
    # A pending message its creator holds for an hour: no retry worker of the suite can take
    # it, so it stays in the queue (scheduled) while this test reads it.
    conv = b.conversation(b.account(FB), "PAGE:PSID-queue")
    b.api.CreateOutbound(tenant_id=b.tenant, conversation_id=conv.conversation_id,
                         idempotency_key=b.uniq("queue"), request_fingerprint="fp",
                         content_text="reply", lease_owner="holder", lease_seconds=3600)
    before = outbound_state(db)
    for what, args in BAD_QUEUE_CAPS.items():
        ok, out, err = psql_app(cluster, f"SELECT * FROM omnichat.retry_queue_depth({args})")
        assert not ok, f"{what}: retry_queue_depth({args}) was accepted and returned {out!r}"
        assert "OCIA0" in err, f"{what}: expected INVALID_ARGUMENT (OCIA0), got {err!r}"
    # Positive control: the runtime role counts across tenants (this test's message among
    # them), the cap bounds the count, and counting changes nothing.
    ok, out, err = psql_app(cluster, "SELECT messages FROM omnichat.retry_queue_depth(100000) "
                                     "WHERE channel_type = 'facebook' AND NOT due")
    assert ok and int(out) >= 1, (out, err)
    ok, out, err = psql_app(cluster, "SELECT sum(messages) FROM omnichat.retry_queue_depth(1)")
    assert ok and int(out) == 1, (out, err)
    assert outbound_state(db) == before


def routes(db):
    """Every webhook route: what a route claim could change."""
    return db.rows("SELECT channel_type, external_account_id, tenant_id, channel_account_id, "
                   "created_at FROM omnichat.webhook_routes ORDER BY 1, 2")


def as_tenant(tenant, sql):
    """sql after setting the tenant; the set_config row is dropped from psql_app's output by
    the callers (out.split()[1:])."""
    return f"SELECT set_config('omnichat.tenant_id', '{tenant}', false); {sql}"


def test_claim_webhook_route_refuses_every_bad_argument_and_changes_nothing(cluster, db, b, b2):
    acct = b.account()
    ext, aid = acct.external_account_id, acct.channel_account_id
    other = b2.account()
    before = routes(db)
    for what, args in BAD_ROUTE_CLAIMS.items():
        call = f"SELECT omnichat.claim_webhook_route({args.format(ext=ext, acct=aid)})"
        ok, out, err = psql_app(cluster, as_tenant(b.tenant, call))
        assert not ok, f"{what}: claim_webhook_route was accepted and returned {out!r}"
        assert "OCIA0" in err, f"{what}: expected INVALID_ARGUMENT (OCIA0), got {err!r}"
        assert routes(db) == before, f"{what}: a refused claim changed the routes"
    # Without a tenant there is no caller to route to.
    good = f"SELECT omnichat.claim_webhook_route('line', '{ext}', '{aid}')"
    ok, out, err = psql_app(cluster, good)
    assert not ok and "OCIA0" in err, (out, err)
    # Another tenant's account, or this tenant's account under a key it was not registered
    # with, is nothing this tenant may route: NOT_FOUND.
    for what, args in {
            "another tenant's account": f"'line', '{other.external_account_id}', "
                                        f"'{other.channel_account_id}'",
            "own account, another key": f"'line', '{other.external_account_id}', '{aid}'",
            "own account, another type": f"'facebook', '{ext}', '{aid}'"}.items():
        ok, out, err = psql_app(cluster, as_tenant(b.tenant,
                                                   f"SELECT omnichat.claim_webhook_route({args})"))
        assert not ok and "OCNF0" in err, f"{what}: expected OCNF0, got {out!r} {err!r}"
        assert routes(db) == before, f"{what}: a refused claim changed the routes"
    # An account row of its own for another tenant's live provider account (the runtime role
    # may insert one under its tenant) does not take the route: false, nothing changed, and no
    # webhook reaches that row.
    stolen = "00000000-0000-4000-8000-" + aid[-12:]
    ok, out, err = psql_app(cluster, as_tenant(b2.tenant, (
        "INSERT INTO omnichat.channel_accounts (tenant_id, id, channel_type, external_account_id) "
        f"VALUES ('{b2.tenant}', '{stolen}', 'line', '{ext}'); "
        f"SELECT omnichat.claim_webhook_route('line', '{ext}', '{stolen}')")))
    assert ok and out.split()[1:] == ["f"], (out, err)
    assert routes(db) == before
    ok, out, err = psql_app(cluster, "SELECT id FROM omnichat.resolve_channel_account("
                                     f"'{stolen}', NULL, NULL)")
    assert ok and out.split() == [], (out, err)
    # Positive control: the same role, its own account under its own key: true.
    ok, out, err = psql_app(cluster, as_tenant(b.tenant, good))
    assert ok and out.split()[1:] == ["t"], err
    assert [ext, b.tenant, aid] in [[r[1], r[2], r[3]] for r in routes(db)]
