"""The migrated schema can be distributed by tenant_id with Citus as it is (docs/scaling.md).

The checker reads pg_class, pg_attribute, pg_index, pg_constraint and pg_policy and reports,
for every table of a schema:
- a table without a tenant_id column that is not an allowed global table;
- for a tenant table (one with tenant_id that is not allowed global): tenant_id not uuid NOT
  NULL (colocation needs one distribution column type); a primary key, unique constraint,
  unique index (partial or not) or exclusion constraint whose key columns lack tenant_id; a
  foreign key that does not pair tenant_id with the referenced table's tenant_id (a foreign key
  to an allowed global table is fine: Citus allows a distributed table to reference a reference
  table); row-level security not enabled, or no tenant_isolation policy comparing tenant_id
  with omnichat.current_tenant() for every command;
- a foreign key from an allowed global table to a tenant table (a Citus reference table cannot
  reference a distributed one).
The project enables row-level security without FORCE (the owner's privileged functions rely on
that), so relforcerowsecurity is not required.

A second check keeps key changes honest: every ON CONFLICT in the schema's functions must name a
unique constraint, or the key columns of a unique index, of the table its INSERT writes.
"""
import re
import subprocess
import uuid

from harness import PSQL

# The global tables: the webhook route (a Citus reference table, docs/scaling.md) and the
# migrator's history (owner only, never distributed).
GLOBAL_TABLES = {"webhook_routes", "schema_migrations"}

TENANT_TABLES = {"channel_accounts", "channel_credentials", "contacts", "conversations",
                 "messages", "attachments"}

CHECK_SQL = r"""
WITH t AS (
    SELECT c.oid, c.relname, c.relrowsecurity, a.attnum AS tnum, a.attnotnull AS tnotnull,
           format_type(a.atttypid, a.atttypmod) AS ttype,
           c.relname = ANY (:'allowed'::text[]) AS allowed
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      LEFT JOIN pg_attribute a
        ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped
     WHERE n.nspname = :'schema' AND c.relkind IN ('r', 'p')),
tenant AS (SELECT * FROM t WHERE tnum IS NOT NULL AND NOT allowed),
fk AS (
    SELECT co.conname, src.relname AS src, co.conkey, co.confkey,
           st.tnum AS src_tnum, st.allowed AS src_allowed, dt.tnum AS dst_tnum,
           dt.allowed AS dst_allowed, dt.relname AS dst
      FROM pg_constraint co
      JOIN pg_class src ON src.oid = co.conrelid
      LEFT JOIN t st ON st.oid = co.conrelid
      LEFT JOIN t dt ON dt.oid = co.confrelid
     WHERE co.contype = 'f' AND (st.oid IS NOT NULL OR dt.oid IS NOT NULL))
SELECT 'tenant ' || relname FROM tenant
UNION ALL
SELECT relname || ': no tenant_id column, and not an allowed global table'
  FROM t WHERE tnum IS NULL AND NOT allowed
UNION ALL
SELECT relname || ': tenant_id is ' || ttype || CASE WHEN tnotnull THEN '' ELSE ' (nullable)' END
       || ', not uuid NOT NULL'
  FROM tenant WHERE ttype <> 'uuid' OR NOT tnotnull
UNION ALL
SELECT tn.relname || ': ' || CASE WHEN i.indisprimary THEN 'primary key ' ELSE 'unique index ' END
       || ic.relname || ' lacks tenant_id'
  FROM tenant tn
  JOIN pg_index i ON i.indrelid = tn.oid
  JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indisunique
   AND NOT (tn.tnum = ANY ((i.indkey::int2[])[0:i.indnkeyatts - 1]))
UNION ALL
SELECT tn.relname || ': exclusion constraint ' || co.conname || ' lacks tenant_id'
  FROM tenant tn JOIN pg_constraint co ON co.conrelid = tn.oid
 WHERE co.contype = 'x' AND NOT (tn.tnum = ANY (co.conkey))
UNION ALL
SELECT fk.src || ': foreign key ' || fk.conname || ' does not pair tenant_id with '
       || fk.dst || '.tenant_id'
  FROM fk
 WHERE fk.src_tnum IS NOT NULL AND NOT fk.src_allowed AND NOT COALESCE(fk.dst_allowed, false)
   AND NOT EXISTS (SELECT 1 FROM unnest(fk.conkey, fk.confkey) AS u(s, d)
                    WHERE u.s = fk.src_tnum AND u.d = fk.dst_tnum)
UNION ALL
SELECT fk.src || ': foreign key ' || fk.conname || ' from a global table to tenant table '
       || fk.dst
  FROM fk
 WHERE COALESCE(fk.src_allowed, false) AND fk.dst_tnum IS NOT NULL AND NOT fk.dst_allowed
UNION ALL
SELECT relname || ': row-level security is not enabled' FROM tenant WHERE NOT relrowsecurity
UNION ALL
SELECT tn.relname || ': no policy USING and WITH CHECK (tenant_id = omnichat.current_tenant())'
  FROM tenant tn
 WHERE NOT EXISTS (
       SELECT 1 FROM pg_policy p
        WHERE p.polrelid = tn.oid AND p.polcmd = '*' AND p.polpermissive
          AND pg_get_expr(p.polqual, p.polrelid) = '(tenant_id = omnichat.current_tenant())'
          AND pg_get_expr(p.polwithcheck, p.polrelid)
              = '(tenant_id = omnichat.current_tenant())')
"""


def check(db, schema, allowed):
    """(tenant tables seen, violations) of the tables of schema. psql variables (:'schema')
    are expanded only in a script, so the query goes in on stdin."""
    arr = "{" + ",".join(sorted(allowed)) + "}"
    r = subprocess.run([PSQL, db.dsn, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                        "-v", f"schema={schema}", "-v", f"allowed={arr}"],
                       input=CHECK_SQL, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = [ln for ln in r.stdout.splitlines() if ln != ""]
    seen = {ln[len("tenant "):] for ln in out if ln.startswith("tenant ")}
    return seen, sorted(ln for ln in out if not ln.startswith("tenant "))


def test_the_omnichat_schema_is_distributable_by_tenant_id(db):
    seen, violations = check(db, "omnichat", GLOBAL_TABLES)
    assert violations == []
    # The checker looked at every tenant table, so an empty list means they passed.
    assert seen == TENANT_TABLES
    # Every allowed global table exists: a stale entry would hide nothing, but would mislead.
    present = {r[0] for r in db.rows(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'omnichat' AND c.relkind IN ('r', 'p')")}
    assert GLOBAL_TABLES <= present


def test_the_checker_reports_each_broken_rule(db):
    """Positive control: a scratch schema with one table per broken rule, and one good table
    the checker must not report."""
    s = "schema_rules_" + uuid.uuid4().hex[:12]
    policy = ("CREATE POLICY tenant_isolation ON {s}.{t} "
              "USING (tenant_id = omnichat.current_tenant()) "
              "WITH CHECK (tenant_id = omnichat.current_tenant())")
    rls = lambda t: [f"ALTER TABLE {s}.{t} ENABLE ROW LEVEL SECURITY",  # noqa: E731
                     policy.format(s=s, t=t)]
    db.run(f"CREATE SCHEMA {s}",
           f"CREATE TABLE {s}.good (tenant_id uuid NOT NULL, id uuid NOT NULL, code text, "
           "PRIMARY KEY (tenant_id, id), UNIQUE (tenant_id, code))",
           *rls("good"),
           f"CREATE TABLE {s}.route (tenant_id uuid NOT NULL, key text PRIMARY KEY)",
           f"CREATE TABLE {s}.global_thing (id int PRIMARY KEY)",
           f"CREATE TABLE {s}.bad_pk (tenant_id uuid NOT NULL, id uuid PRIMARY KEY)",
           *rls("bad_pk"),
           f"CREATE TABLE {s}.bad_unique (tenant_id uuid NOT NULL, id uuid NOT NULL, "
           "code text, PRIMARY KEY (tenant_id, id), UNIQUE (code))",
           *rls("bad_unique"),
           f"CREATE TABLE {s}.bad_index (tenant_id uuid NOT NULL, id uuid NOT NULL, code text, "
           "PRIMARY KEY (tenant_id, id))",
           f"CREATE UNIQUE INDEX bad_index_code_uq ON {s}.bad_index (lower(code)) "
           "INCLUDE (tenant_id) WHERE code IS NOT NULL",
           *rls("bad_index"),
           f"CREATE TABLE {s}.bad_fk (tenant_id uuid NOT NULL, id uuid NOT NULL, "
           "good_id uuid NOT NULL, PRIMARY KEY (tenant_id, id), "
           f"CONSTRAINT bad_fk_swapped FOREIGN KEY (good_id, tenant_id) "
           f"REFERENCES {s}.good (tenant_id, id))",
           *rls("bad_fk"),
           f"CREATE TABLE {s}.fk_to_route (tenant_id uuid NOT NULL, id uuid NOT NULL, "
           f"key text REFERENCES {s}.route (key), PRIMARY KEY (tenant_id, id))",
           *rls("fk_to_route"),
           f"ALTER TABLE {s}.route ADD CONSTRAINT route_to_good FOREIGN KEY (tenant_id, key) "
           f"REFERENCES {s}.good (tenant_id, code)",
           f"CREATE TABLE {s}.no_rls (tenant_id uuid NOT NULL, id uuid NOT NULL, "
           "PRIMARY KEY (tenant_id, id))",
           f"CREATE TABLE {s}.weak_policy (tenant_id uuid NOT NULL, id uuid NOT NULL, "
           "PRIMARY KEY (tenant_id, id))",
           f"ALTER TABLE {s}.weak_policy ENABLE ROW LEVEL SECURITY",
           f"CREATE POLICY p ON {s}.weak_policy USING (true)",
           f"CREATE TABLE {s}.nullable_tenant (tenant_id uuid, id uuid NOT NULL, "
           "UNIQUE (tenant_id, id))",
           *rls("nullable_tenant"))
    try:
        seen, violations = check(db, s, {"route"})
    finally:
        db.run(f"DROP SCHEMA {s} CASCADE")
    assert "good" in seen and "fk_to_route" in seen
    assert violations == sorted([
        "bad_pk: primary key bad_pk_pkey lacks tenant_id",
        "bad_unique: unique index bad_unique_code_key lacks tenant_id",
        "bad_index: unique index bad_index_code_uq lacks tenant_id",
        "bad_fk: foreign key bad_fk_swapped does not pair tenant_id with good.tenant_id",
        "route: foreign key route_to_good from a global table to tenant table good",
        "global_thing: no tenant_id column, and not an allowed global table",
        "no_rls: row-level security is not enabled",
        "no_rls: no policy USING and WITH CHECK (tenant_id = omnichat.current_tenant())",
        "weak_policy: no policy USING and WITH CHECK (tenant_id = omnichat.current_tenant())",
        "nullable_tenant: tenant_id is uuid (nullable), not uuid NOT NULL",
    ])


# An INSERT with its ON CONFLICT target, not reaching into the next INSERT of the body.
ON_CONFLICT = re.compile(r"INSERT\s+INTO\s+(?:omnichat\.)?(\w+)(?:(?!INSERT\s).)*?"
                         r"ON\s+CONFLICT\s+(?:ON\s+CONSTRAINT\s+(\w+)|\(([^)]*)\))", re.I | re.S)


def conflict_targets(db):
    """(table, constraint) of the unique constraints of the omnichat schema, and (table, key
    column set) of its unique indexes (what ON CONFLICT (columns) can infer)."""
    constraints = {tuple(r) for r in db.rows(
        "SELECT c.relname, co.conname FROM pg_constraint co "
        "JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'omnichat' AND co.contype IN ('p', 'u')")}
    index_cols = {(r[0], frozenset(r[1].split(","))) for r in db.rows(
        "SELECT c.relname, string_agg(a.attname, ',') FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "CROSS JOIN LATERAL unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) AS k(attnum) "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
        "WHERE n.nspname = 'omnichat' AND i.indisunique GROUP BY c.relname, i.indexrelid")}
    return constraints, index_cols


def dangling_conflicts(sources, constraints, index_cols):
    """(function, table, target) of every ON CONFLICT in sources that names no unique
    constraint or unique index of its INSERT's table; and how many ON CONFLICT clauses the
    bodies hold (each must belong to an INSERT the pattern understood)."""
    bad, found, total = [], 0, 0
    for name, src in sources:
        total += len(re.findall(r"ON\s+CONFLICT", src, re.I))
        for m in ON_CONFLICT.finditer(src):
            found += 1
            table, con, cols = m.group(1), m.group(2), m.group(3)
            if con is not None:
                if (table, con) not in constraints:
                    bad.append((name, table, con))
            elif (table, frozenset(c.strip() for c in cols.split(","))) not in index_cols:
                bad.append((name, table, f"({cols})"))
    assert found == total, f"{total} ON CONFLICT clauses, {found} understood"
    return bad, found


def test_every_on_conflict_names_a_key_that_exists(db):
    """An index change must not leave a function's ON CONFLICT pointing at nothing: PostgreSQL
    only finds out when the statement runs."""
    # '|' is psql's field separator: function bodies hold it ('||').
    sources = [tuple(r) for r in db.rows(
        "SELECT p.proname, translate(p.prosrc, E'|\\n', '! ') FROM pg_proc p "
        "JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'omnichat'")]
    constraints, index_cols = conflict_targets(db)
    bad, seen = dangling_conflicts(sources, constraints, index_cols)
    assert bad == []
    # The checker found them all: contacts, conversations, messages (four times: 0008 inlined
    # the insert into persist_inbound_one and create_outbound_typed), attachments (three times),
    # channel_accounts, webhook_routes.
    assert seen == 11
    # Positive control: the target 0006 dropped (its columns are a key of webhook_routes, not of
    # channel_accounts), and a constraint of another table.
    bad, _ = dangling_conflicts(
        [("old_register", "INSERT INTO omnichat.channel_accounts (a) VALUES (1) "
                          "ON CONFLICT (channel_type, external_account_id) "
                          "WHERE status <> 'disabled' DO NOTHING"),
         ("wrong_table", "INSERT INTO omnichat.contacts (a) VALUES (1) "
                         "ON CONFLICT ON CONSTRAINT webhook_routes_pkey DO NOTHING")],
        constraints, index_cols)
    assert bad == [("old_register", "channel_accounts", "(channel_type, external_account_id)"),
                   ("wrong_table", "contacts", "webhook_routes_pkey")]
