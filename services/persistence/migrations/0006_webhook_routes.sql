-- 0006: a schema that Citus can distribute by tenant_id as it is (docs/scaling.md).
--
-- Citus enforces a primary key, a unique key or a foreign key of a distributed table only when
-- it contains the distribution column. Every key of the tenant tables already did, except one:
-- channel_accounts_external_uq, the global (channel_type, external_account_id) index that makes
-- a live provider account belong to exactly one tenant and lets a webhook find that tenant.
-- That lookup now has its own small table, webhook_routes, keyed by (channel_type,
-- external_account_id): a Citus reference table (one copy on every node), so the global
-- uniqueness stays a plain primary key. channel_accounts keeps a per-tenant unique index, and
-- its index on id alone (the LINE callback URL carries the account id but no tenant) goes: the
-- route table answers that lookup too.
--
-- Who writes the routes. A route is claimed after the account row is inserted, in the same
-- transaction, by claim_webhook_route (SECURITY DEFINER): the route of another tenant must be
-- seen to be refused, and the runtime role sees no other tenant. The function takes its tenant
-- from omnichat.tenant_id, not from an argument, and routes only a live account of that tenant
-- with the same type and external id. The runtime role has no privilege on the table; it reads
-- routes only through resolve_channel_account (SECURITY DEFINER, as before). No trigger: Citus
-- does not run triggers of a distributed table that write another table. The global rule now
-- lives in the route table: an account row written with plain SQL, around
-- register_channel_account, gets no route, so no webhook ever reaches it.
--
-- A disabled account (an operator's UPDATE; no RPC disables) keeps its route until someone
-- registers the same provider account again: claim_webhook_route then moves a route whose
-- account is no longer live. resolve_channel_account checks the account's status, so such a
-- stale route answers NOT_FOUND, as the old index did.
--
-- Locks: ACCESS EXCLUSIVE on channel_accounts (the index swap), taken first so that the
-- backfill cannot deadlock against a concurrent RegisterChannelAccount by upgrading a weaker
-- lock. Webhook routing and channel RPCs wait for the migration's one transaction; messages,
-- conversations and contacts are not locked. The table holds one row per provider account, so
-- the backfill and the index build take milliseconds.

LOCK TABLE omnichat.channel_accounts IN ACCESS EXCLUSIVE MODE;

CREATE TABLE omnichat.webhook_routes (
    channel_type        text        NOT NULL CHECK (channel_type = ANY ('{line,facebook,instagram}'::text[])),
    external_account_id text        NOT NULL CHECK (length(external_account_id) BETWEEN 1 AND 256),
    tenant_id           uuid        NOT NULL,
    channel_account_id  uuid        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (channel_type, external_account_id),
    -- One route per account (an account's type and external id never change), and the lookup
    -- of the LINE callback URL, which names the account.
    UNIQUE (channel_account_id)
);

-- The old global index guarantees at most one live account per key: no conflict here.
INSERT INTO omnichat.webhook_routes (channel_type, external_account_id, tenant_id,
                                     channel_account_id, created_at)
SELECT a.channel_type, a.external_account_id, a.tenant_id, a.id, a.created_at
  FROM omnichat.channel_accounts a
 WHERE a.status <> 'disabled';

DROP INDEX omnichat.channel_accounts_external_uq;
DROP INDEX omnichat.channel_accounts_id_idx;
-- One live account per provider account within a tenant: what a concurrent
-- RegisterChannelAccount of the same tenant waits on, and the index of ch_get_by_key.
CREATE UNIQUE INDEX channel_accounts_tenant_external_uq
    ON omnichat.channel_accounts (tenant_id, channel_type, external_account_id)
    WHERE status <> 'disabled';

-- Not used by the runtime role (it has no privilege here); a second wall should a grant be added.
ALTER TABLE omnichat.webhook_routes ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON omnichat.webhook_routes
    USING (tenant_id = omnichat.current_tenant())
    WITH CHECK (tenant_id = omnichat.current_tenant());
REVOKE ALL ON omnichat.webhook_routes FROM PUBLIC, omnichat_runtime;

-- Routes (p_type, p_external) to the current tenant's account p_account unless a live account
-- holds the route; true when the route is p_account's afterwards. Says nothing else about the
-- holder. Its arguments are checked as strictly as the API does: it runs as the schema owner.
CREATE FUNCTION omnichat.claim_webhook_route(p_type text, p_external text, p_account uuid)
    RETURNS boolean
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
DECLARE
    v_tenant uuid := current_tenant();
    v_holder_tenant uuid;
    v_holder uuid;
BEGIN
    IF v_tenant IS NULL THEN
        RAISE EXCEPTION 'tenant_id: omnichat.tenant_id is not set' USING ERRCODE = 'OCIA0';
    END IF;
    IF p_type IS NULL OR p_type <> ALL ('{line,facebook,instagram}'::text[]) THEN
        RAISE EXCEPTION 'channel_type: must be one of line, facebook, instagram'
            USING ERRCODE = 'OCIA0';
    END IF;
    -- PST_MAX_KEY in pst.h.
    IF p_external IS NULL OR octet_length(p_external) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'external_account_id: must be 1 to 256 bytes' USING ERRCODE = 'OCIA0';
    END IF;
    IF p_account IS NULL THEN
        RAISE EXCEPTION 'channel_account_id: is required' USING ERRCODE = 'OCIA0';
    END IF;
    -- Only a live account of the caller's tenant, for the key it was registered with.
    PERFORM 1 FROM channel_accounts a
     WHERE a.tenant_id = v_tenant AND a.id = p_account AND a.channel_type = p_type
       AND a.external_account_id = p_external AND a.status <> 'disabled';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel_account_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
    FOR i IN 1..2 LOOP
        -- A concurrent claim of the same key waits here for the other transaction's end.
        INSERT INTO webhook_routes (channel_type, external_account_id, tenant_id,
                                    channel_account_id)
        VALUES (p_type, p_external, v_tenant, p_account)
        ON CONFLICT ON CONSTRAINT webhook_routes_pkey DO NOTHING;
        IF FOUND THEN
            RETURN true;
        END IF;
        SELECT r.tenant_id, r.channel_account_id INTO v_holder_tenant, v_holder
          FROM webhook_routes r
         WHERE r.channel_type = p_type AND r.external_account_id = p_external
           FOR UPDATE;
        IF FOUND THEN
            IF v_holder_tenant = v_tenant AND v_holder = p_account THEN
                RETURN true;
            END IF;
            PERFORM 1 FROM channel_accounts a
             WHERE a.tenant_id = v_holder_tenant AND a.id = v_holder AND a.status <> 'disabled';
            IF FOUND THEN
                RETURN false;
            END IF;
            -- The holder was disabled: its route is stale, and this account takes it over.
            UPDATE webhook_routes r
               SET tenant_id = v_tenant, channel_account_id = p_account, created_at = now()
             WHERE r.channel_type = p_type AND r.external_account_id = p_external;
            RETURN true;
        END IF;
        -- The conflicting route went away between the two statements: go round.
    END LOOP;
    RAISE EXCEPTION 'external_account_id: concurrent update, retry' USING ERRCODE = '40001';
END
$$;

CREATE OR REPLACE FUNCTION omnichat.register_channel_account(
    p_tenant uuid, p_new_id uuid, p_type text, p_external text, p_name text,
    OUT channel_account_id uuid, OUT created boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    r record;
BEGIN
    FOR i IN 1..2 LOOP
        SELECT a.id, a.display_name INTO r
          FROM omnichat.channel_accounts a
         WHERE a.tenant_id = p_tenant AND a.channel_type = p_type
           AND a.external_account_id = p_external AND a.status <> 'disabled';
        IF FOUND THEN
            channel_account_id := r.id;
            created := false;
            IF COALESCE(p_name, '') <> '' AND p_name <> r.display_name THEN
                UPDATE omnichat.channel_accounts a SET display_name = p_name, updated_at = now()
                 WHERE a.tenant_id = p_tenant AND a.id = r.id;
            END IF;
            RETURN;
        END IF;
        -- A new account has no credentials yet: it is auth_failed until
        -- UpdateChannelCredentials, so a connect that dies half-way never looks usable. A
        -- concurrent registration by the same tenant makes this a no-op; the re-read above
        -- then finds its account.
        INSERT INTO omnichat.channel_accounts (tenant_id, id, channel_type, external_account_id,
                                      display_name, status)
        VALUES (p_tenant, p_new_id, p_type, p_external, COALESCE(p_name, ''), 'auth_failed')
        ON CONFLICT (tenant_id, channel_type, external_account_id) WHERE status <> 'disabled'
        DO NOTHING
        RETURNING id INTO channel_account_id;
        IF channel_account_id IS NOT NULL THEN
            -- The global rule: another tenant's live account keeps the provider account, and
            -- the exception undoes the insert above.
            IF NOT omnichat.claim_webhook_route(p_type, p_external, channel_account_id) THEN
                RAISE EXCEPTION 'external_account_id: already connected by another tenant'
                    USING ERRCODE = 'OCAE0';
            END IF;
            created := true;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'external_account_id: concurrent update, retry' USING ERRCODE = '40001';
END
$$;

-- Two steps, each one index lookup on one table: the route (a reference table under Citus),
-- then the account by its primary key (tenant_id, id), which Citus sends to one shard.
CREATE OR REPLACE FUNCTION omnichat.resolve_channel_account(p_id uuid, p_type text, p_external text)
    RETURNS SETOF omnichat.v_channel_accounts
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
DECLARE
    v_tenant uuid;
    v_account uuid;
BEGIN
    IF p_id IS NOT NULL THEN
        IF p_type IS NOT NULL OR p_external IS NOT NULL THEN
            RAISE EXCEPTION 'channel_account_id: give it alone, or channel_type with '
                            'external_account_id' USING ERRCODE = 'OCIA0';
        END IF;
        SELECT r.tenant_id, r.channel_account_id INTO v_tenant, v_account
          FROM webhook_routes r WHERE r.channel_account_id = p_id;
    ELSE
        IF p_type IS NULL OR p_type <> ALL ('{line,facebook,instagram}'::text[]) THEN
            RAISE EXCEPTION 'channel_type: must be one of line, facebook, instagram'
                USING ERRCODE = 'OCIA0';
        END IF;
        -- PST_MAX_KEY in pst.h.
        IF p_external IS NULL OR octet_length(p_external) NOT BETWEEN 1 AND 256 THEN
            RAISE EXCEPTION 'external_account_id: must be 1 to 256 bytes' USING ERRCODE = 'OCIA0';
        END IF;
        SELECT r.tenant_id, r.channel_account_id INTO v_tenant, v_account
          FROM webhook_routes r
         WHERE r.channel_type = p_type AND r.external_account_id = p_external;
    END IF;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    -- A route left by an account disabled since is no route.
    RETURN QUERY SELECT v.* FROM v_channel_accounts v
                  WHERE v.tenant_id = v_tenant AND v.id = v_account AND v.status <> 'disabled';
END
$$;

REVOKE ALL ON FUNCTION omnichat.claim_webhook_route(text, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION omnichat.claim_webhook_route(text, text, uuid) TO omnichat_runtime;
