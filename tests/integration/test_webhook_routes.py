"""Webhook routes (migration 0006): the one global lookup, (channel_type, external_account_id)
-> (tenant, account), in its own table, read by the runtime role only through
resolve_channel_account; migration 0006 on a populated database."""
import hashlib
import os
import subprocess
import uuid

import grpc

import harness
from harness import Db, assert_code, pb, rpc_error
from test_schema_rules import GLOBAL_TABLES, check

MIGRATIONS = os.path.join(os.path.dirname(__file__), "..", "..", "services", "persistence",
                          "migrations")


def resolve_by_key(api, channel_type, ext):
    return api.ResolveChannelAccount(channel_type=channel_type,
                                     external_account_id=ext).channel_account


def resolve_by_id(api, account_id):
    return api.ResolveChannelAccount(channel_account_id=account_id).channel_account


def test_the_runtime_role_cannot_read_or_write_routes(app_db, db, b):
    acct = b.account()
    # Positive control: the route exists, and the same role reads its own tenant's account.
    assert db.count("SELECT count(*) FROM omnichat.webhook_routes "
                    f"WHERE channel_account_id = '{acct.channel_account_id}'") == 1
    set_tenant = f"SELECT set_config('omnichat.tenant_id', '{b.tenant}', false)"
    assert app_db.rows(set_tenant, "SELECT id FROM omnichat.channel_accounts")[-1] == \
        [acct.channel_account_id]
    for sql in ("SELECT * FROM omnichat.webhook_routes",
                "DELETE FROM omnichat.webhook_routes",
                "INSERT INTO omnichat.webhook_routes (channel_type, external_account_id, "
                f"tenant_id, channel_account_id) VALUES ('line', 'x', '{b.tenant}', "
                f"'{acct.channel_account_id}')"):
        r = app_db.run(set_tenant, sql, check=False)
        assert r.returncode != 0 and "permission denied" in r.stderr, (sql, r.stderr)


def test_a_route_resolves_by_key_and_by_id(api, b):
    acct = b.account(pb.CHANNEL_TYPE_FACEBOOK)
    assert resolve_by_key(api, pb.CHANNEL_TYPE_FACEBOOK, acct.external_account_id) \
        .channel_account_id == acct.channel_account_id
    got = resolve_by_id(api, acct.channel_account_id)
    assert (got.tenant_id, got.channel_account_id) == (b.tenant, acct.channel_account_id)
    # The same external id under another type is another provider account: no route.
    assert_code(rpc_error(resolve_by_key, api, pb.CHANNEL_TYPE_INSTAGRAM, acct.external_account_id),
                grpc.StatusCode.NOT_FOUND)


def test_another_tenant_is_refused_and_leaves_nothing(api, db, b, b2):
    acct = b.account()
    err = rpc_error(b2.api.RegisterChannelAccount, tenant_id=b2.tenant,
                    channel_type=pb.CHANNEL_TYPE_LINE, external_account_id=acct.external_account_id)
    assert_code(err, grpc.StatusCode.ALREADY_EXISTS, field="external_account_id")
    # The refused registration's account row was rolled back with it.
    assert db.tenant_counts(b2.tenant)["channel_accounts"] == 0
    assert resolve_by_key(api, pb.CHANNEL_TYPE_LINE, acct.external_account_id).tenant_id == b.tenant


def test_a_disabled_account_gives_its_route_up(api, db, b, b2):
    """Disabling is an operator's UPDATE. The stale route resolves to nothing, and the next
    registration of the provider account, by any tenant, takes the route over."""
    old = b.account()
    ext = old.external_account_id
    db.run("UPDATE omnichat.channel_accounts SET status = 'disabled' "
           f"WHERE tenant_id = '{b.tenant}' AND id = '{old.channel_account_id}'")
    assert_code(rpc_error(resolve_by_key, api, pb.CHANNEL_TYPE_LINE, ext),
                grpc.StatusCode.NOT_FOUND)
    assert_code(rpc_error(resolve_by_id, api, old.channel_account_id), grpc.StatusCode.NOT_FOUND)
    r = b2.api.RegisterChannelAccount(tenant_id=b2.tenant, channel_type=pb.CHANNEL_TYPE_LINE,
                                      external_account_id=ext)
    assert r.created
    new = r.channel_account
    got = resolve_by_key(api, pb.CHANNEL_TYPE_LINE, ext)
    assert (got.tenant_id, got.channel_account_id) == (b2.tenant, new.channel_account_id)
    assert resolve_by_id(api, new.channel_account_id).tenant_id == b2.tenant
    assert_code(rpc_error(resolve_by_id, api, old.channel_account_id), grpc.StatusCode.NOT_FOUND)
    assert db.count("SELECT count(*) FROM omnichat.webhook_routes "
                    f"WHERE external_account_id = '{ext}'") == 1


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_migration_0006_on_a_populated_database(cluster, db):
    """0001-0005 applied and filled with accounts (live and disabled), contacts, conversations
    and messages; then the real migrator applies 0006 alone: one route per live account, the
    other tables untouched, and the schema rules hold where they did not before."""
    name = "omnichat_mig_" + uuid.uuid4().hex[:10]
    db.run(f"CREATE DATABASE {name} OWNER omnichat")
    owner = Db(cluster.dsn("owner").replace("dbname=omnichat", f"dbname={name}"))
    super_db = Db(cluster.dsn("super").replace("dbname=omnichat", f"dbname={name}"))
    try:
        owner.run("CREATE SCHEMA omnichat",
                  "CREATE TABLE omnichat.schema_migrations (version integer PRIMARY KEY, "
                  "name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL "
                  "DEFAULT now())")
        files = sorted(f for f in os.listdir(MIGRATIONS) if f.endswith(".sql"))
        assert files[5] == "0006_webhook_routes.sql", files
        for f in files[:5]:
            path = os.path.join(MIGRATIONS, f)
            r = subprocess.run([harness.PSQL, owner.dsn, "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1",
                                "-f", path], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0, r.stderr
            owner.run("INSERT INTO omnichat.schema_migrations (version, name, checksum) "
                      f"VALUES ({int(f[:4])}, '{f}', '{_sha256(path)}')")
        t1, t2 = harness.new_id(), harness.new_id()
        owner.run(
            # ext-1 is live in t1 and disabled in t2 (the old index allowed that); ext-4 is
            # disabled only.
            "INSERT INTO omnichat.channel_accounts (tenant_id, id, channel_type, "
            "external_account_id, status) SELECT t::uuid, gen_random_uuid(), ty, 'ext-' || i, st "
            f"FROM (VALUES ('{t1}', 'line', 1, 'active'), ('{t1}', 'facebook', 2, 'auth_failed'), "
            f"('{t2}', 'instagram', 3, 'active'), ('{t2}', 'line', 1, 'disabled'), "
            f"('{t2}', 'line', 4, 'disabled')) v(t, ty, i, st)",
            "INSERT INTO omnichat.contacts (tenant_id, id, channel_account_id, external_user_id) "
            "SELECT tenant_id, gen_random_uuid(), id, 'u' FROM omnichat.channel_accounts",
            "INSERT INTO omnichat.conversations (tenant_id, id, channel_account_id, channel_type, "
            "thread_key, contact_id, last_activity_at) SELECT a.tenant_id, gen_random_uuid(), "
            "a.id, a.channel_type, 'th', c.id, now() FROM omnichat.channel_accounts a "
            "JOIN omnichat.contacts c ON c.tenant_id = a.tenant_id AND c.channel_account_id = a.id",
            "INSERT INTO omnichat.messages (tenant_id, id, channel_account_id, conversation_id, "
            "direction, idempotency_key, sender_type, content_type, status, channel_timestamp) "
            "SELECT tenant_id, gen_random_uuid(), channel_account_id, id, 'inbound', 'k' || g, "
            "'contact', 'text', 'received', now() FROM omnichat.conversations, "
            "generate_series(1, 50) g")
        counts = "SELECT (SELECT count(*) FROM omnichat.contacts), " \
                 "(SELECT count(*) FROM omnichat.conversations), " \
                 "(SELECT count(*) FROM omnichat.messages)"
        before = owner.rows(counts)
        assert before == [["5", "5", "250"]]
        # The schema before 0006 breaks exactly the rule 0006 fixes (the checker's control).
        _, violations = check(super_db, "omnichat", GLOBAL_TABLES)
        assert violations == ["channel_accounts: unique index channel_accounts_external_uq "
                              "lacks tenant_id"]

        r = subprocess.run([os.path.join(harness.BIN_DIR, "omnichat-persistence"), "migrate",
                            "--database-url", owner.dsn], capture_output=True, text=True,
                           timeout=180, env=harness.child_env())
        assert r.returncode == 0, r.stdout + r.stderr
        assert "0006_webhook_routes.sql" in r.stdout + r.stderr
        assert owner.rows("SELECT version FROM omnichat.schema_migrations ORDER BY 1") == \
            [[str(v)] for v in range(1, len(files) + 1)]

        routes = owner.rows("SELECT r.tenant_id, r.channel_type, r.external_account_id, "
                            "r.channel_account_id = a.id FROM omnichat.webhook_routes r "
                            "JOIN omnichat.channel_accounts a ON a.tenant_id = r.tenant_id "
                            "AND a.channel_type = r.channel_type "
                            "AND a.external_account_id = r.external_account_id "
                            "AND a.status <> 'disabled' ORDER BY 3")
        assert routes == [[t1, "line", "ext-1", "t"], [t1, "facebook", "ext-2", "t"],
                          [t2, "instagram", "ext-3", "t"]]
        assert owner.count("SELECT count(*) FROM omnichat.webhook_routes") == 3
        assert owner.rows(counts) == before
        seen, violations = check(super_db, "omnichat", GLOBAL_TABLES)
        assert violations == [] and len(seen) == 6
        # The backfilled routes serve the lookup, as the owner's function does for the service.
        assert owner.scalar("SELECT tenant_id FROM omnichat.resolve_channel_account("
                            "NULL, 'instagram', 'ext-3')") == t2
        assert owner.rows("SELECT id FROM omnichat.resolve_channel_account("
                          "NULL, 'line', 'ext-4')") == []
    finally:
        db.run(f"DROP DATABASE {name} WITH (FORCE)")
