-- 0002: the write paths as functions, so each RPC is one statement in one round trip.
--
-- All of them are SECURITY INVOKER (row-level security applies) except the two cross-tenant
-- paths at the end, which are SECURITY DEFINER, narrow, and take no tenant input they could
-- be tricked with. Errors meant for the caller use our own SQLSTATEs, mapped by common/pg.c:
--   OCIA0 invalid argument, OCNF0 not found, OCAE0 already exists, OCFP0 failed precondition.
-- Their messages start with the offending field's name and never contain data.

-- Outbound view with the conversation's thread key (the provider-side recipient).
CREATE VIEW omnichat.v_outbound WITH (security_invoker = true) AS
SELECT v.*, c.thread_key
  FROM omnichat.v_messages v
  JOIN omnichat.conversations c ON c.tenant_id = v.tenant_id AND c.id = v.conversation_id;

CREATE FUNCTION omnichat.upsert_contact(
    p_tenant uuid, p_account uuid, p_external text, p_name text, p_avatar text,
    p_profile jsonb, p_new_id uuid, OUT contact_id uuid, OUT created boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    r record;
BEGIN
    -- Read first: the common case (a known contact, nothing changed) costs one index probe
    -- and writes nothing.
    SELECT c.id, c.display_name, c.avatar_url, c.profile INTO r
      FROM omnichat.contacts c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
       AND c.external_user_id = p_external;
    IF NOT FOUND THEN
        PERFORM 1 FROM omnichat.channel_accounts a WHERE a.tenant_id = p_tenant AND a.id = p_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'channel_account_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
        INSERT INTO omnichat.contacts (tenant_id, id, channel_account_id, external_user_id,
                              display_name, avatar_url, profile)
        VALUES (p_tenant, p_new_id, p_account, p_external, COALESCE(p_name, ''),
                COALESCE(p_avatar, ''), COALESCE(p_profile, '{}'))
        ON CONFLICT ON CONSTRAINT contacts_tenant_id_channel_account_id_external_user_id_key
        DO NOTHING
        RETURNING id INTO contact_id;
        IF contact_id IS NOT NULL THEN
            created := true;
            RETURN;
        END IF;
        -- A concurrent call inserted it first; ours waited for its commit, so it is visible.
        SELECT c.id, c.display_name, c.avatar_url, c.profile INTO r
          FROM omnichat.contacts c
         WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
           AND c.external_user_id = p_external;
    END IF;
    contact_id := r.id;
    created := false;
    IF (COALESCE(p_name, '') <> '' AND p_name <> r.display_name)
       OR (COALESCE(p_avatar, '') <> '' AND p_avatar <> r.avatar_url)
       OR (p_profile IS NOT NULL AND p_profile <> r.profile) THEN
        UPDATE omnichat.contacts c
           SET display_name = COALESCE(NULLIF(p_name, ''), c.display_name),
               avatar_url = COALESCE(NULLIF(p_avatar, ''), c.avatar_url),
               profile = COALESCE(p_profile, c.profile),
               updated_at = now()
         WHERE c.tenant_id = p_tenant AND c.id = r.id;
    END IF;
END
$$;

CREATE FUNCTION omnichat.upsert_conversation(
    p_tenant uuid, p_account uuid, p_thread_key text, p_contact uuid, p_ts timestamptz,
    p_new_id uuid, OUT conversation_id uuid, OUT created boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    r record;
    v_type text;
BEGIN
    IF p_contact IS NOT NULL THEN
        PERFORM 1 FROM omnichat.contacts t
         WHERE t.tenant_id = p_tenant AND t.id = p_contact AND t.channel_account_id = p_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'contact_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
    END IF;
    SELECT c.id, c.contact_id INTO r
      FROM omnichat.conversations c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
       AND c.thread_key = p_thread_key;
    IF NOT FOUND THEN
        SELECT a.channel_type INTO v_type
          FROM omnichat.channel_accounts a WHERE a.tenant_id = p_tenant AND a.id = p_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'channel_account_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
        INSERT INTO omnichat.conversations (tenant_id, id, channel_account_id, channel_type, thread_key,
                                   contact_id, last_activity_at)
        VALUES (p_tenant, p_new_id, p_account, v_type, p_thread_key, p_contact,
                COALESCE(p_ts, now()))
        ON CONFLICT ON CONSTRAINT conversations_tenant_id_channel_account_id_thread_key_key
        DO NOTHING
        RETURNING id INTO conversation_id;
        IF conversation_id IS NOT NULL THEN
            created := true;
            RETURN;
        END IF;
        SELECT c.id, c.contact_id INTO r
          FROM omnichat.conversations c
         WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
           AND c.thread_key = p_thread_key;
    END IF;
    conversation_id := r.id;
    created := false;
    IF r.contact_id IS NULL AND p_contact IS NOT NULL THEN
        UPDATE omnichat.conversations c SET contact_id = p_contact, updated_at = now()
         WHERE c.tenant_id = p_tenant AND c.id = r.id AND c.contact_id IS NULL;
    END IF;
END
$$;

-- Inserts one message row unless its idempotency key exists; on insert also advances the
-- conversation (late messages never move last_message_at back) and stores attachments.
CREATE FUNCTION omnichat.insert_message_row(
    p_tenant uuid, p_id uuid, p_account uuid, p_conversation uuid, p_contact uuid,
    p_direction text, p_key text, p_external text, p_sender_type text, p_sender_id text,
    p_sender_name text, p_content_type text, p_text text, p_struct jsonb, p_status text,
    p_ts timestamptz, p_attachments jsonb, p_retry_key uuid, p_fingerprint text,
    p_lease_owner text, p_lease_seconds integer,
    OUT message_id uuid, OUT created boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_natt integer := COALESCE(jsonb_array_length(p_attachments), 0);
    -- A lease needs an owner; a pending outbound message without one is due at once.
    v_lease timestamptz := CASE WHEN p_lease_seconds > 0 AND COALESCE(p_lease_owner, '') <> ''
                                THEN now() + make_interval(secs => p_lease_seconds) END;
BEGIN
    INSERT INTO omnichat.messages (tenant_id, id, channel_account_id, conversation_id, contact_id,
                          direction, idempotency_key, external_message_id, sender_type,
                          sender_id, sender_display_name, content_type, content_text,
                          content_struct, status, channel_timestamp, attachment_count,
                          provider_retry_key, request_fingerprint, lease_owner, lease_until,
                          next_attempt_at)
    VALUES (p_tenant, p_id, p_account, p_conversation, p_contact, p_direction, p_key,
            NULLIF(p_external, ''), p_sender_type, COALESCE(p_sender_id, ''),
            COALESCE(p_sender_name, ''), p_content_type, COALESCE(p_text, ''), p_struct,
            p_status, p_ts, v_natt, p_retry_key, p_fingerprint, NULLIF(p_lease_owner, ''),
            v_lease,
            CASE WHEN p_status IN ('pending', 'unknown') THEN COALESCE(v_lease, now()) END)
    ON CONFLICT ON CONSTRAINT messages_tenant_id_channel_account_id_direction_idempotency_key
    DO NOTHING
    RETURNING id INTO message_id;
    IF message_id IS NULL THEN
        SELECT m.id INTO message_id
          FROM omnichat.messages m
         WHERE m.tenant_id = p_tenant AND m.channel_account_id = p_account
           AND m.direction = p_direction AND m.idempotency_key = p_key;
        created := false;
        RETURN;
    END IF;
    created := true;
    UPDATE omnichat.conversations c
       SET message_count = c.message_count + 1,
           last_message_preview = CASE
               WHEN c.last_message_at IS NULL OR p_ts >= c.last_message_at THEN
                   CASE WHEN COALESCE(p_text, '') <> '' THEN left(p_text, 200)
                        ELSE '[' || p_content_type || ']' END
               ELSE c.last_message_preview END,
           last_message_at = GREATEST(c.last_message_at, p_ts),
           last_activity_at = GREATEST(c.last_activity_at, p_ts),
           updated_at = now()
     WHERE c.tenant_id = p_tenant AND c.id = p_conversation;
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

-- InsertMessage. Leaves the message id in omnichat.result_id for the statement that reads it
-- back in the same round trip.
CREATE FUNCTION omnichat.insert_message(
    p_tenant uuid, p_conversation uuid, p_account uuid, p_direction text, p_key text,
    p_external text, p_sender_type text, p_sender_id text, p_sender_name text,
    p_content_type text, p_text text, p_struct jsonb, p_status text, p_ts_ms bigint,
    p_attachments jsonb, p_contact uuid, p_new_id uuid,
    OUT message_id uuid, OUT created boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_account uuid;
    v_contact uuid;
BEGIN
    SELECT c.channel_account_id, c.contact_id INTO v_account, v_contact
      FROM omnichat.conversations c WHERE c.tenant_id = p_tenant AND c.id = p_conversation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
    IF p_account IS NOT NULL AND p_account <> v_account THEN
        RAISE EXCEPTION 'channel_account_id: is not the conversation''s channel account'
            USING ERRCODE = 'OCIA0';
    END IF;
    IF p_contact IS NOT NULL THEN
        PERFORM 1 FROM omnichat.contacts t
         WHERE t.tenant_id = p_tenant AND t.id = p_contact AND t.channel_account_id = v_account;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'contact_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
        v_contact := p_contact;
    END IF;
    SELECT r.message_id, r.created INTO message_id, created
      FROM omnichat.insert_message_row(p_tenant, p_new_id, v_account, p_conversation, v_contact,
                              p_direction, p_key, p_external, p_sender_type, p_sender_id,
                              p_sender_name, p_content_type, p_text, p_struct, p_status,
                              omnichat.from_ms(p_ts_ms), p_attachments, NULL, NULL, NULL, 0) r;
    PERFORM set_config('omnichat.result_id', message_id::text, true);
END
$$;

-- One normalized inbound event: contact, conversation, message (+ attachments). The common
-- case (known contact and conversation, new message) reads two index entries before it writes.
CREATE FUNCTION omnichat.persist_inbound_one(
    p_tenant uuid, p_account uuid, p_external_user text, p_contact_name text,
    p_contact_avatar text, p_contact_profile jsonb, p_thread_key text, p_key text,
    p_external_msg text, p_direction text, p_sender_type text, p_sender_name text,
    p_content_type text, p_text text, p_struct jsonb, p_ts_ms bigint, p_attachments jsonb,
    p_new_contact uuid, p_new_conversation uuid, p_new_message uuid, p_item integer,
    OUT message_id uuid, OUT created boolean, OUT contact_id uuid, OUT conversation_id uuid)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_ts timestamptz := omnichat.from_ms(p_ts_ms);
    v_new boolean;
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
    SELECT c.id, c.contact_id INTO r
      FROM omnichat.conversations c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account
       AND c.thread_key = p_thread_key;
    IF FOUND AND r.contact_id IS NOT NULL THEN
        conversation_id := r.id;
    ELSE
        SELECT u.conversation_id INTO conversation_id
          FROM omnichat.upsert_conversation(p_tenant, p_account, p_thread_key, contact_id, v_ts,
                                            p_new_conversation) u;
    END IF;
    SELECT x.message_id, x.created INTO message_id, v_new
      FROM omnichat.insert_message_row(p_tenant, p_new_message, p_account, conversation_id,
                                       contact_id, p_direction, p_key, p_external_msg,
                                       p_sender_type, p_external_user, p_sender_name,
                                       p_content_type, p_text, p_struct,
                                       CASE WHEN p_direction = 'inbound' THEN 'received'
                                            ELSE 'sent' END,
                                       v_ts, p_attachments, NULL, NULL, NULL, 0) x;
    created := v_new;
END
$$;

CREATE FUNCTION omnichat.add_attachments(p_tenant uuid, p_message uuid, p_attachments jsonb)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM 1 FROM omnichat.messages m WHERE m.tenant_id = p_tenant AND m.id = p_message FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'message_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
    INSERT INTO omnichat.attachments (tenant_id, id, message_id, ordinal, kind, url, mime_type,
                             size_bytes, name, metadata)
    SELECT p_tenant, gen_random_uuid(), p_message, x.ordinal, x.kind, COALESCE(x.url, ''),
           COALESCE(x.mime_type, ''), COALESCE(x.size_bytes, 0), COALESCE(x.name, ''),
           COALESCE(x.metadata, '{}')
      FROM jsonb_to_recordset(p_attachments)
           AS x(ordinal integer, kind text, url text, mime_type text, size_bytes bigint,
                name text, metadata jsonb)
    ON CONFLICT ON CONSTRAINT attachments_tenant_id_message_id_ordinal_key DO NOTHING;
    UPDATE omnichat.messages m
       SET attachment_count = (SELECT count(*) FROM omnichat.attachments a
                                WHERE a.tenant_id = p_tenant AND a.message_id = p_message),
           updated_at = now()
     WHERE m.tenant_id = p_tenant AND m.id = p_message;
    IF (SELECT m.attachment_count FROM omnichat.messages m
         WHERE m.tenant_id = p_tenant AND m.id = p_message) > 20 THEN
        RAISE EXCEPTION 'attachments: a message holds at most 20 attachments'
            USING ERRCODE = 'OCIA0';
    END IF;
END
$$;

CREATE FUNCTION omnichat.register_channel_account(
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
        -- The unique index is not subject to row-level security, so a live account of
        -- another tenant makes this a no-op that the re-read below cannot see. A new account
        -- has no credentials yet: it is auth_failed until UpdateChannelCredentials, so a
        -- connect that dies half-way never looks usable.
        INSERT INTO omnichat.channel_accounts (tenant_id, id, channel_type, external_account_id,
                                      display_name, status)
        VALUES (p_tenant, p_new_id, p_type, p_external, COALESCE(p_name, ''), 'auth_failed')
        ON CONFLICT (channel_type, external_account_id) WHERE status <> 'disabled' DO NOTHING
        RETURNING id INTO channel_account_id;
        IF channel_account_id IS NOT NULL THEN
            created := true;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'external_account_id: already connected by another tenant'
        USING ERRCODE = 'OCAE0';
END
$$;

CREATE FUNCTION omnichat.update_channel_credentials(p_tenant uuid, p_account uuid,
                                                    p_credentials jsonb)
    RETURNS void
    LANGUAGE plpgsql
AS $$
BEGIN
    -- Replacing the credentials is what moves an auth_failed account back to active.
    UPDATE omnichat.channel_accounts a
       SET status = CASE WHEN a.status = 'disabled' THEN a.status ELSE 'active' END,
           updated_at = now()
     WHERE a.tenant_id = p_tenant AND a.id = p_account;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'channel_account_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
    DELETE FROM omnichat.channel_credentials c
     WHERE c.tenant_id = p_tenant AND c.channel_account_id = p_account;
    INSERT INTO omnichat.channel_credentials (tenant_id, channel_account_id, field, key_id, ciphertext)
    SELECT p_tenant, p_account, x.field, x.key_id, decode(x.ciphertext, 'base64')
      FROM jsonb_to_recordset(p_credentials) AS x(field text, key_id text, ciphertext text);
END
$$;

-- Create-or-get of an outbound message (Stripe's idempotency rules). Returns the message row
-- and the conversation's thread key, so the caller needs no read-back. The common case (a new
-- key) is one index probe of the conversation, the insert and the conversation's counters.
CREATE FUNCTION omnichat.create_outbound(
    p_tenant uuid, p_conversation uuid, p_key text, p_fingerprint text, p_sender_type text,
    p_sender_id text, p_sender_name text, p_content_type text, p_text text, p_struct jsonb,
    p_retry_key uuid, p_lease_owner text, p_lease_seconds integer, p_new_id uuid,
    OUT msg omnichat.messages, OUT thread_key text, OUT created boolean,
    OUT lease_acquired boolean)
    LANGUAGE plpgsql
AS $$
DECLARE
    v_account uuid;
    v_contact uuid;
    v_leased boolean := COALESCE(p_lease_owner, '') <> '';
    -- A lease needs an owner; a pending message without one is due at once.
    v_lease timestamptz := CASE WHEN p_lease_seconds > 0 AND COALESCE(p_lease_owner, '') <> ''
                                THEN now() + make_interval(secs => p_lease_seconds) END;
BEGIN
    SELECT c.channel_account_id, c.contact_id, c.thread_key INTO v_account, v_contact, thread_key
      FROM omnichat.conversations c WHERE c.tenant_id = p_tenant AND c.id = p_conversation;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'conversation_id: not found' USING ERRCODE = 'OCNF0';
    END IF;
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
            -- The same conversation update as insert_message_row, at channel time now().
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

-- One UPDATE in the common case (our lease, not final yet); the row comes back as it is
-- afterwards, so the caller needs no read-back.
CREATE FUNCTION omnichat.complete_outbound(
    p_tenant uuid, p_id uuid, p_owner text, p_outcome text, p_external text,
    p_category text, p_detail text, p_next_ms bigint, p_provider_called boolean)
    RETURNS omnichat.messages
    LANGUAGE plpgsql
AS $$
DECLARE
    r omnichat.messages;
BEGIN
    FOR i IN 1..2 LOOP
        -- An expired lease still counts while nobody else took it over.
        UPDATE omnichat.messages m
           SET attempts = m.attempts + CASE WHEN p_provider_called THEN 1 ELSE 0 END,
               status = CASE p_outcome WHEN 'sent' THEN 'sent' WHEN 'failed' THEN 'failed'
                                       WHEN 'retry' THEN 'pending' ELSE 'unknown' END,
               external_message_id = COALESCE(NULLIF(p_external, ''), m.external_message_id),
               error_category = CASE WHEN p_outcome = 'sent' THEN NULL ELSE p_category END,
               error_detail = CASE WHEN p_outcome = 'sent' THEN NULL ELSE NULLIF(p_detail, '') END,
               next_attempt_at = CASE WHEN p_outcome IN ('retry', 'unknown')
                                      THEN omnichat.from_ms(p_next_ms) END,
               lease_owner = NULL,
               lease_until = NULL,
               updated_at = now()
         WHERE m.tenant_id = p_tenant AND m.id = p_id AND m.direction = 'outbound'
           AND m.status NOT IN ('sent', 'failed') AND m.lease_owner IS NOT DISTINCT FROM p_owner
        RETURNING m.* INTO r;
        IF FOUND THEN
            RETURN r;
        END IF;
        SELECT m.* INTO r
          FROM omnichat.messages m
         WHERE m.tenant_id = p_tenant AND m.id = p_id AND m.direction = 'outbound'
           FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'message_id: not found' USING ERRCODE = 'OCNF0';
        END IF;
        IF r.status IN ('sent', 'failed') THEN
            RETURN r; -- final already: the caller gets it back as it is
        END IF;
        IF r.lease_owner IS DISTINCT FROM p_owner THEN
            RAISE EXCEPTION 'lease_owner: the lease is held by another worker'
                USING ERRCODE = 'OCFP0';
        END IF;
        -- The lease became ours between the two statements: go round (the row is locked now).
    END LOOP;
    RAISE EXCEPTION 'message_id: concurrent update, retry' USING ERRCODE = '40001';
END
$$;

-- Retry worker, across tenants: the narrow privileged path. It leases due omnichat.messages of one
-- channel type and returns them with their thread key.
CREATE FUNCTION omnichat.claim_due_outbound(p_type text, p_limit integer, p_owner text,
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

-- Webhook routing, across tenants: by account id or by (type, external id); live accounts only.
CREATE FUNCTION omnichat.resolve_channel_account(p_id uuid, p_type text, p_external text)
    RETURNS SETOF omnichat.v_channel_accounts
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
BEGIN
    -- Two shapes, two statements: each one an index lookup.
    IF p_id IS NOT NULL THEN
        RETURN QUERY SELECT v.* FROM v_channel_accounts v
                      WHERE v.id = p_id AND v.status <> 'disabled' LIMIT 1;
    ELSE
        RETURN QUERY SELECT v.* FROM v_channel_accounts v
                      WHERE v.channel_type = p_type AND v.external_account_id = p_external
                        AND v.status <> 'disabled' LIMIT 1;
    END IF;
END
$$;

REVOKE ALL ON FUNCTION omnichat.claim_due_outbound(text, integer, text, integer) FROM PUBLIC;
REVOKE ALL ON FUNCTION omnichat.resolve_channel_account(uuid, text, text) FROM PUBLIC;
GRANT SELECT ON omnichat.v_messages, omnichat.v_conversations, omnichat.v_channel_accounts,
                omnichat.v_outbound TO omnichat_runtime;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA omnichat TO omnichat_runtime;
