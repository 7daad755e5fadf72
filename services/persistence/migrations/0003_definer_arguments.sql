-- 0003: the SECURITY DEFINER functions check their arguments as strictly as the API does.
--
-- They run as the schema owner, across tenants, and the runtime role may call them directly
-- (with psql, or from any code holding the service's connection). 0002 trusted the service to
-- have validated what it passes: claim_due_outbound('facebook', NULL, 'evil', 2147483647) leased
-- every due message of every tenant until 2094, and a NULL limit meant no limit. Each argument
-- is now checked here against the same bounds as services/persistence (rpc_outbound.c,
-- rpc_channels.c, pst.h); a bad one raises OCIA0 (INVALID_ARGUMENT) before anything is read or
-- written. The bodies are otherwise those of 0002; CREATE OR REPLACE keeps owner and grants.

CREATE OR REPLACE FUNCTION omnichat.claim_due_outbound(p_type text, p_limit integer, p_owner text,
                                                       p_lease_seconds integer)
    RETURNS SETOF omnichat.v_outbound
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
DECLARE
    v_tenants uuid[];
    v_ids uuid[];
BEGIN
    -- channel_types in convert.c; CLAIM_MAX, LEASE_OWNER_MAX and LEASE_SECONDS_MAX in
    -- rpc_outbound.c (the connector's --lease-seconds has the same upper bound).
    IF p_type IS NULL OR p_type <> ALL ('{line,facebook,instagram}'::text[]) THEN
        RAISE EXCEPTION 'channel_type: must be one of line, facebook, instagram'
            USING ERRCODE = 'OCIA0';
    END IF;
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100 THEN
        RAISE EXCEPTION 'limit: must be between 1 and 100' USING ERRCODE = 'OCIA0';
    END IF;
    IF p_owner IS NULL OR octet_length(p_owner) NOT BETWEEN 1 AND 128 THEN
        RAISE EXCEPTION 'lease_owner: must be 1 to 128 bytes' USING ERRCODE = 'OCIA0';
    END IF;
    IF p_lease_seconds IS NULL OR p_lease_seconds NOT BETWEEN 1 AND 3600 THEN
        RAISE EXCEPTION 'lease_seconds: must be between 1 and 3600' USING ERRCODE = 'OCIA0';
    END IF;

    WITH due AS (
        SELECT m.tenant_id, m.id
          FROM messages m
         WHERE m.direction = 'outbound' AND m.status IN ('pending', 'unknown')
           AND m.next_attempt_at <= now()
           AND (m.lease_until IS NULL OR m.lease_until < now())
           AND EXISTS (SELECT 1 FROM channel_accounts a
                        WHERE a.tenant_id = m.tenant_id AND a.id = m.channel_account_id
                          AND a.channel_type = p_type)
         ORDER BY m.next_attempt_at
         LIMIT p_limit
           FOR UPDATE OF m SKIP LOCKED),
    leased AS (
        UPDATE messages m
           SET lease_owner = p_owner,
               lease_until = now() + make_interval(secs => p_lease_seconds),
               updated_at = now()
          FROM due
         WHERE m.tenant_id = due.tenant_id AND m.id = due.id
        RETURNING m.tenant_id, m.id)
    SELECT array_agg(l.tenant_id), array_agg(l.id) INTO v_tenants, v_ids FROM leased l;
    -- By (tenant_id, id): the primary key. messages has no index on id alone.
    RETURN QUERY SELECT o.*
                   FROM unnest(v_tenants, v_ids) AS k(tenant_id, id)
                   JOIN v_outbound o ON o.tenant_id = k.tenant_id AND o.id = k.id
                  ORDER BY o.channel_timestamp, o.id;
END
$$;

-- Two shapes, as the RPC sends them: (id, NULL, NULL) or (NULL, type, external id). Anything
-- else is refused rather than guessed at: a NULL type with an external id would otherwise match
-- nothing silently, and a mixed call means the caller is not the service.
CREATE OR REPLACE FUNCTION omnichat.resolve_channel_account(p_id uuid, p_type text, p_external text)
    RETURNS SETOF omnichat.v_channel_accounts
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
BEGIN
    IF p_id IS NOT NULL THEN
        IF p_type IS NOT NULL OR p_external IS NOT NULL THEN
            RAISE EXCEPTION 'channel_account_id: give it alone, or channel_type with '
                            'external_account_id' USING ERRCODE = 'OCIA0';
        END IF;
        RETURN QUERY SELECT v.* FROM v_channel_accounts v
                      WHERE v.id = p_id AND v.status <> 'disabled' LIMIT 1;
        RETURN;
    END IF;
    IF p_type IS NULL OR p_type <> ALL ('{line,facebook,instagram}'::text[]) THEN
        RAISE EXCEPTION 'channel_type: must be one of line, facebook, instagram'
            USING ERRCODE = 'OCIA0';
    END IF;
    -- PST_MAX_KEY in pst.h.
    IF p_external IS NULL OR octet_length(p_external) NOT BETWEEN 1 AND 256 THEN
        RAISE EXCEPTION 'external_account_id: must be 1 to 256 bytes' USING ERRCODE = 'OCIA0';
    END IF;
    RETURN QUERY SELECT v.* FROM v_channel_accounts v
                  WHERE v.channel_type = p_type AND v.external_account_id = p_external
                    AND v.status <> 'disabled' LIMIT 1;
END
$$;
