-- 0008: the two hot write paths without nested PL/pgSQL calls (issue 10).
--
-- pg_stat_statements and EXPLAIN (ANALYZE, BUFFERS, WAL) of PersistInbound and SendText
-- (docs/benchmarks.md, "Per-statement costs") showed statements, not rows, as the cost that
-- can go without a schema rewrite: every statement a PL/pgSQL function runs starts an executor,
-- and a function called from another one (SELECT ... FROM f(...)) also starts its own
-- PL/pgSQL call frame and a second query level.
--
-- persist_inbound_one: a new message was the duplicate probe, the contact read, the
-- conversation read, then insert_message_row (its own frame: the insert, the conversation
-- update). Now the insert and the conversation update are inline, and the conversation read
-- locks the row (FOR NO KEY UPDATE) that the update would lock anyway: the insert's
-- foreign-key check then takes no key-share lock, which under concurrent messages of one
-- conversation made a MultiXact per message. A duplicate is still one index probe. Same
-- arguments, same results, same errors; insert_message_row stays for InsertMessage.
--
-- create_outbound_typed: was a conversation-and-account read, then create_outbound (its own
-- frame, which read the conversation again). Now one read of the conversation with its
-- account's channel type (locked, as above), and create_outbound's body inline. create_outbound
-- stays unchanged for older callers.
--
-- Only CREATE OR REPLACE FUNCTION: no table is touched, so the migration takes no lock on any
-- table and its duration does not depend on the number of rows. Owner and grants are kept.

CREATE OR REPLACE FUNCTION omnichat.persist_inbound_one(
    p_tenant uuid, p_account uuid, p_external_user text, p_contact_name text,
    p_contact_avatar text, p_contact_profile jsonb, p_thread_key text, p_key text,
    p_external_msg text, p_direction text, p_sender_type text, p_sender_name text,
    p_content_type text, p_text text, p_struct jsonb, p_ts_ms bigint, p_attachments jsonb,
    p_new_contact uuid, p_new_conversation uuid, p_new_message uuid, p_item integer,
    OUT message_id uuid, OUT created boolean, OUT contact_id uuid, OUT conversation_id uuid)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_ts timestamptz;
    v_natt integer;
    v_conv uuid;
    v_conv_contact uuid;
    r record;
BEGIN
    -- A redelivered event costs one index probe and writes nothing.
    SELECT m.id, m.contact_id, m.conversation_id INTO message_id, contact_id, conversation_id
      FROM omnichat.messages m
     WHERE m.tenant_id = p_tenant AND m.channel_account_id = p_account
       AND m.direction = p_direction AND m.idempotency_key = p_key;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    v_ts := omnichat.from_ms(p_ts_ms);
    -- A known contact with nothing new to record needs no function call and no write.
    SELECT c.id, c.display_name, c.avatar_url, c.profile INTO r
      FROM omnichat.contacts c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
       AND c.external_user_id = p_external_user;
    IF FOUND AND (COALESCE(p_contact_name, '') = '' OR p_contact_name = r.display_name)
       AND (COALESCE(p_contact_avatar, '') = '' OR p_contact_avatar = r.avatar_url)
       AND (p_contact_profile IS NULL OR p_contact_profile = r.profile) THEN
        contact_id := r.id;
    ELSE
        IF NOT FOUND THEN
            PERFORM 1 FROM omnichat.channel_accounts a
             WHERE a.tenant_id = p_tenant AND a.id = p_account;
            IF NOT FOUND THEN
                RAISE EXCEPTION 'messages[%].channel_account_id: not found', p_item
                    USING ERRCODE = 'OCNF0';
            END IF;
        END IF;
        SELECT u.contact_id INTO contact_id
          FROM omnichat.upsert_contact(p_tenant, p_account, p_external_user, p_contact_name,
                                       p_contact_avatar, p_contact_profile, p_new_contact) u;
    END IF;
    -- The conversation is locked here, before the message insert, for the update below. The
    -- insert's foreign-key check then finds the row locked by this transaction already and
    -- takes no lock of its own; before, it took a key-share lock that concurrent messages of
    -- the same conversation turned into a MultiXact each (82,000 in one LINE benchmark run),
    -- and every caller then queued on the update anyway. The lock order is unchanged: contact
    -- first, then conversation, items in PersistInbound's global order.
    SELECT c.id, c.contact_id INTO v_conv, v_conv_contact
      FROM omnichat.conversations c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
       AND c.thread_key = p_thread_key
       FOR NO KEY UPDATE;
    IF FOUND AND v_conv_contact IS NOT NULL THEN
        conversation_id := v_conv;
    ELSE
        SELECT u.conversation_id INTO conversation_id
          FROM omnichat.upsert_conversation(p_tenant, p_account, p_thread_key, contact_id, v_ts,
                                            p_new_conversation) u;
    END IF;
    -- insert_message_row's insert, inline: received (inbound) or sent (an echo of our own send),
    -- neither of which is ever due for a retry.
    v_natt := COALESCE(jsonb_array_length(p_attachments), 0);
    INSERT INTO omnichat.messages (tenant_id, id, channel_account_id, conversation_id, contact_id,
                          direction, idempotency_key, external_message_id, sender_type,
                          sender_id, sender_display_name, content_type, content_text,
                          content_struct, status, channel_timestamp, attachment_count)
    VALUES (p_tenant, p_new_message, p_account, conversation_id, contact_id, p_direction, p_key,
            NULLIF(p_external_msg, ''), p_sender_type, COALESCE(p_external_user, ''),
            COALESCE(p_sender_name, ''), p_content_type, COALESCE(p_text, ''), p_struct,
            CASE WHEN p_direction = 'inbound' THEN 'received' ELSE 'sent' END, v_ts, v_natt)
    ON CONFLICT ON CONSTRAINT messages_tenant_id_channel_account_id_direction_idempotency_key
    DO NOTHING
    RETURNING id INTO message_id;
    IF message_id IS NULL THEN
        -- A concurrent call stored the same event first; ours waited for its commit.
        SELECT m.id INTO message_id
          FROM omnichat.messages m
         WHERE m.tenant_id = p_tenant AND m.channel_account_id = p_account
           AND m.direction = p_direction AND m.idempotency_key = p_key;
        created := false;
        RETURN;
    END IF;
    created := true;
    -- Late messages never move last_message_at back.
    UPDATE omnichat.conversations c
       SET message_count = c.message_count + 1,
           last_message_preview = CASE
               WHEN c.last_message_at IS NULL OR v_ts >= c.last_message_at THEN
                   CASE WHEN COALESCE(p_text, '') <> '' THEN left(p_text, 200)
                        ELSE '[' || p_content_type || ']' END
               ELSE c.last_message_preview END,
           last_message_at = GREATEST(c.last_message_at, v_ts),
           last_activity_at = GREATEST(c.last_activity_at, v_ts),
           updated_at = now()
     WHERE c.tenant_id = p_tenant AND c.id = conversation_id;
    IF v_natt > 0 THEN
        INSERT INTO omnichat.attachments (tenant_id, id, message_id, ordinal, kind, url, mime_type,
                                 size_bytes, name, metadata)
        SELECT p_tenant, gen_random_uuid(), message_id, x.ordinal, x.kind,
               COALESCE(x.url, ''), COALESCE(x.mime_type, ''), COALESCE(x.size_bytes, 0),
               COALESCE(x.name, ''), COALESCE(x.metadata, '{}')
          FROM jsonb_to_recordset(p_attachments)
               AS x(ordinal integer, kind text, url text, mime_type text, size_bytes bigint,
                    name text, metadata jsonb)
        ON CONFLICT ON CONSTRAINT attachments_tenant_id_message_id_ordinal_key DO NOTHING;
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION omnichat.create_outbound_typed(
    p_tenant uuid, p_conversation uuid, p_key text, p_fingerprint text, p_sender_type text,
    p_sender_id text, p_sender_name text, p_content_type text, p_text text, p_struct jsonb,
    p_retry_key uuid, p_lease_owner text, p_lease_seconds integer, p_new_id uuid,
    p_types text[],
    OUT msg omnichat.messages, OUT thread_key text, OUT created boolean,
    OUT lease_acquired boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_account uuid;
    v_contact uuid;
    v_type text;
    v_leased boolean := COALESCE(p_lease_owner, '') <> '';
    -- A lease needs an owner; a pending message without one is due at once.
    v_lease timestamptz := CASE WHEN p_lease_seconds > 0 AND COALESCE(p_lease_owner, '') <> ''
                                THEN now() + make_interval(secs => p_lease_seconds) END;
BEGIN
    -- The conversation and its account's channel type in one statement, the conversation
    -- locked for the update below (see persist_inbound_one: no MultiXact from the insert's
    -- foreign-key check).
    SELECT c.channel_account_id, c.contact_id, c.thread_key, a.channel_type
      INTO v_account, v_contact, thread_key, v_type
      FROM omnichat.conversations c
      LEFT JOIN omnichat.channel_accounts a
        ON a.tenant_id = c.tenant_id AND a.id = c.channel_account_id
     WHERE c.tenant_id = p_tenant AND c.id = p_conversation
       FOR NO KEY UPDATE OF c;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
    IF cardinality(p_types) > 0 AND v_type <> ALL (p_types) THEN
        RAISE EXCEPTION 'conversation_id: is a % conversation, not %', v_type,
            array_to_string(p_types, ' or ') USING ERRCODE = 'OCFP0';
    END IF;
    -- From here on, create_outbound (0002) as it is.
    FOR i IN 1..2 LOOP
        -- Insert first: a repeated key conflicts without writing anything and is read below.
        INSERT INTO omnichat.messages AS m (tenant_id, id, channel_account_id, conversation_id,
                              contact_id, direction, idempotency_key, sender_type, sender_id,
                              sender_display_name, content_type, content_text, content_struct,
                              status, channel_timestamp, attachment_count, provider_retry_key,
                              request_fingerprint, lease_owner, lease_until, next_attempt_at)
        VALUES (p_tenant, p_new_id, v_account, p_conversation, v_contact, 'outbound', p_key,
                p_sender_type, COALESCE(p_sender_id, ''), COALESCE(p_sender_name, ''),
                p_content_type, COALESCE(p_text, ''), p_struct, 'pending', now(), 0,
                p_retry_key, p_fingerprint, NULLIF(p_lease_owner, ''), v_lease,
                COALESCE(v_lease, now()))
        ON CONFLICT ON CONSTRAINT messages_tenant_id_channel_account_id_direction_idempotency_key
        DO NOTHING
        RETURNING m.* INTO msg;
        IF FOUND THEN
            created := true;
            lease_acquired := v_leased;
            UPDATE omnichat.conversations c
               SET message_count = c.message_count + 1,
                   last_message_preview = CASE
                       WHEN c.last_message_at IS NULL OR now() >= c.last_message_at THEN
                           CASE WHEN COALESCE(p_text, '') <> '' THEN left(p_text, 200)
                                ELSE '[' || p_content_type || ']' END
                       ELSE c.last_message_preview END,
                   last_message_at = GREATEST(c.last_message_at, now()),
                   last_activity_at = GREATEST(c.last_activity_at, now()),
                   updated_at = now()
             WHERE c.tenant_id = p_tenant AND c.id = p_conversation;
            RETURN;
        END IF;
        SELECT m.* INTO msg
          FROM omnichat.messages m
         WHERE m.tenant_id = p_tenant AND m.channel_account_id = v_account
           AND m.direction = 'outbound' AND m.idempotency_key = p_key
           FOR UPDATE;
        IF FOUND THEN
            IF msg.request_fingerprint IS DISTINCT FROM p_fingerprint
               OR msg.conversation_id <> p_conversation THEN
                RAISE EXCEPTION 'idempotency_key: already used with a different request'
                    USING ERRCODE = 'OCAE0';
            END IF;
            created := false;
            lease_acquired := false;
            -- Take over a send whose previous holder is gone and which is due anyway. A
            -- message without a next attempt is settled (an unknown outcome for good).
            IF msg.status IN ('pending', 'unknown') AND v_leased
               AND (msg.lease_until IS NULL OR msg.lease_until < now())
               AND msg.next_attempt_at IS NOT NULL AND msg.next_attempt_at <= now() THEN
                UPDATE omnichat.messages m
                   SET lease_owner = p_lease_owner,
                       lease_until = now() + make_interval(secs => p_lease_seconds),
                       next_attempt_at = now() + make_interval(secs => p_lease_seconds),
                       updated_at = now()
                 WHERE m.tenant_id = p_tenant AND m.id = msg.id
                RETURNING m.* INTO msg;
                lease_acquired := true;
            END IF;
            RETURN;
        END IF;
        -- The conflicting row went away between the two statements: go round.
    END LOOP;
    RAISE EXCEPTION 'idempotency_key: concurrent update, retry' USING ERRCODE = '40001';
END
$$;
