-- 0004: one connector serves several channel types (Meta: facebook and instagram), and
-- CreateOutbound checks the conversation's channel type itself.
--
-- claim_due_outbound_types is claim_due_outbound for a list of types: the retry worker of a
-- connector claims the due messages of all its types in one statement. The single-type
-- function stays for older connectors. Its arguments are checked as strictly as the API does:
-- it runs as the schema owner, across tenants.
--
-- create_outbound_typed checks, in the same transaction, that the conversation belongs to an
-- account of one of the connector's types (FAILED_PRECONDITION, nothing written) and then
-- creates or gets the message exactly as create_outbound does. The connector then needs no
-- GetConversation round trip and no conversation cache.

CREATE FUNCTION omnichat.claim_due_outbound_types(p_types text[], p_limit integer, p_owner text,
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
    IF p_types IS NULL OR cardinality(p_types) NOT BETWEEN 1 AND 3
       OR NOT (p_types <@ '{line,facebook,instagram}'::text[]) THEN
        RAISE EXCEPTION 'channel_types: must be 1 to 3 of line, facebook, instagram'
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
                          AND a.channel_type = ANY (p_types))
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
    RETURN QUERY SELECT o.*
                   FROM unnest(v_tenants, v_ids) AS k(tenant_id, id)
                   JOIN v_outbound o ON o.tenant_id = k.tenant_id AND o.id = k.id
                  ORDER BY o.channel_timestamp, o.id;
END
$$;

CREATE FUNCTION omnichat.create_outbound_typed(
    p_tenant uuid, p_conversation uuid, p_key text, p_fingerprint text, p_sender_type text,
    p_sender_id text, p_sender_name text, p_content_type text, p_text text, p_struct jsonb,
    p_retry_key uuid, p_lease_owner text, p_lease_seconds integer, p_new_id uuid,
    p_types text[],
    OUT msg omnichat.messages, OUT thread_key text, OUT created boolean,
    OUT lease_acquired boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_type text;
    v_r record;
BEGIN
    IF cardinality(p_types) > 0 THEN
        SELECT a.channel_type INTO v_type
          FROM omnichat.conversations c
          JOIN omnichat.channel_accounts a
            ON a.tenant_id = c.tenant_id AND a.id = c.channel_account_id
         WHERE c.tenant_id = p_tenant AND c.id = p_conversation;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'conversation_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
        IF v_type <> ALL (p_types) THEN
            RAISE EXCEPTION 'conversation_id: is a % conversation, not %', v_type,
                array_to_string(p_types, ' or ') USING ERRCODE = 'OCFP0';
        END IF;
    END IF;
    SELECT * INTO v_r
      FROM omnichat.create_outbound(p_tenant, p_conversation, p_key, p_fingerprint,
                                    p_sender_type, p_sender_id, p_sender_name, p_content_type,
                                    p_text, p_struct, p_retry_key, p_lease_owner,
                                    p_lease_seconds, p_new_id);
    msg := v_r.msg;
    thread_key := v_r.thread_key;
    created := v_r.created;
    lease_acquired := v_r.lease_acquired;
END
$$;

REVOKE ALL ON FUNCTION omnichat.claim_due_outbound_types(text[], integer, text, integer)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION omnichat.claim_due_outbound_types(text[], integer, text, integer),
                          omnichat.create_outbound_typed(uuid, uuid, text, text, text, text, text,
                                                         text, text, jsonb, uuid, text, integer,
                                                         uuid, text[])
    TO omnichat_runtime;
