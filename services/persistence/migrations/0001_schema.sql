-- 0001: tables, indexes, row-level security and the runtime role of the persistence service.
--
-- Every table carries tenant_id and every primary and unique key starts with it, so the schema
-- can later be distributed by tenant_id (Citus). The service connects as a login role that is a
-- member of omnichat_runtime: not the owner, so row-level security applies to it. Each
-- transaction sets omnichat.tenant_id first (set_config(..., true): transaction-local, safe
-- behind PgBouncer in transaction mode) and every policy compares against it, so a statement
-- that forgot its tenant filter sees nothing.

CREATE SCHEMA IF NOT EXISTS omnichat;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'omnichat_runtime') THEN
        CREATE ROLE omnichat_runtime NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
END
$$;

-- The tenant of the current transaction; NULL (matches nothing) when unset or empty.
CREATE FUNCTION omnichat.current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('omnichat.tenant_id', true), '')::uuid $$;

-- Timestamps leave the database as integer microseconds since the epoch: exact, and free of
-- DateStyle/TimeZone formatting. The bodies use only immutable operators (timestamptz minus
-- timestamptz, timestamp plus interval, AT TIME ZONE 'UTC'; not extract() of a timestamptz nor
-- timestamptz plus interval, which are stable), so the planner inlines these functions instead
-- of running a SQL function, with its parse and plan, for every call site of every statement.
CREATE FUNCTION omnichat.us(ts timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM ts - 'epoch'::timestamptz) * 1000000)::bigint $$;

CREATE FUNCTION omnichat.from_ms(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('epoch'::timestamp + ms * interval '1 millisecond') AT TIME ZONE 'UTC' $$;

CREATE FUNCTION omnichat.from_us(us bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT ('epoch'::timestamp + us * interval '1 microsecond') AT TIME ZONE 'UTC' $$;

-- Lists of allowed values are written as one array constant (= ANY ('{...}'::text[])), not
-- IN (...): every INSERT and UPDATE deserialises and prepares each CHECK of its table, and an
-- IN list is stored as one node per element. Same rule, same constraint names.
CREATE TABLE omnichat.channel_accounts (
    tenant_id           uuid        NOT NULL,
    id                  uuid        NOT NULL,
    channel_type        text        NOT NULL CHECK (channel_type = ANY ('{line,facebook,instagram}'::text[])),
    external_account_id text        NOT NULL CHECK (length(external_account_id) BETWEEN 1 AND 256),
    display_name        text        NOT NULL DEFAULT '',
    status              text        NOT NULL DEFAULT 'active'
                                    CHECK (status = ANY ('{active,auth_failed,disabled}'::text[])),
    last_error_category text,
    last_error_at       timestamptz,
    last_success_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
-- A webhook must resolve to exactly one tenant: one live account per provider account.
CREATE UNIQUE INDEX channel_accounts_external_uq
    ON omnichat.channel_accounts (channel_type, external_account_id) WHERE status <> 'disabled';
-- Webhook routing by account id (LINE callback URL) comes without a tenant.
CREATE INDEX channel_accounts_id_idx ON omnichat.channel_accounts (id);

-- Sealed credentials only: the service never sees plaintext.
CREATE TABLE omnichat.channel_credentials (
    tenant_id          uuid        NOT NULL,
    channel_account_id uuid        NOT NULL,
    field              text        NOT NULL CHECK (length(field) BETWEEN 1 AND 64),
    key_id             text        NOT NULL CHECK (length(key_id) BETWEEN 1 AND 64),
    ciphertext         bytea       NOT NULL CHECK (length(ciphertext) BETWEEN 1 AND 16384),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, channel_account_id, field),
    FOREIGN KEY (tenant_id, channel_account_id)
        REFERENCES omnichat.channel_accounts (tenant_id, id) ON DELETE CASCADE
);

CREATE TABLE omnichat.contacts (
    tenant_id          uuid        NOT NULL,
    id                 uuid        NOT NULL,
    channel_account_id uuid        NOT NULL,
    external_user_id   text        NOT NULL CHECK (length(external_user_id) BETWEEN 1 AND 256),
    display_name       text        NOT NULL DEFAULT '',
    avatar_url         text        NOT NULL DEFAULT '',
    profile            jsonb       NOT NULL DEFAULT '{}',
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_account_id, external_user_id),
    FOREIGN KEY (tenant_id, channel_account_id)
        REFERENCES omnichat.channel_accounts (tenant_id, id)
);

CREATE TABLE omnichat.conversations (
    tenant_id            uuid        NOT NULL,
    id                   uuid        NOT NULL,
    channel_account_id   uuid        NOT NULL,
    -- Copied from the account so the inbox can filter by channel type on one index.
    channel_type         text        NOT NULL,
    thread_key           text        NOT NULL CHECK (length(thread_key) BETWEEN 1 AND 300),
    contact_id           uuid,
    last_message_at      timestamptz,
    last_activity_at     timestamptz NOT NULL,
    last_message_preview text        NOT NULL DEFAULT '',
    message_count        bigint      NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, channel_account_id, thread_key),
    FOREIGN KEY (tenant_id, channel_account_id)
        REFERENCES omnichat.channel_accounts (tenant_id, id),
    FOREIGN KEY (tenant_id, contact_id) REFERENCES omnichat.contacts (tenant_id, id)
);
-- ListConversations: newest activity first, keyset on (last_activity_at, id), one index per
-- filter shape so every page is an index range scan.
CREATE INDEX conversations_activity_idx
    ON omnichat.conversations (tenant_id, last_activity_at DESC, id DESC);
CREATE INDEX conversations_type_activity_idx
    ON omnichat.conversations (tenant_id, channel_type, last_activity_at DESC, id DESC);
CREATE INDEX conversations_account_activity_idx
    ON omnichat.conversations (tenant_id, channel_account_id, last_activity_at DESC, id DESC);

CREATE TABLE omnichat.messages (
    tenant_id           uuid        NOT NULL,
    id                  uuid        NOT NULL, -- UUIDv7: time-ordered, the timeline tie-breaker
    channel_account_id  uuid        NOT NULL,
    conversation_id     uuid        NOT NULL,
    contact_id          uuid,
    direction           text        NOT NULL CHECK (direction = ANY ('{inbound,outbound}'::text[])),
    idempotency_key     text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 256),
    external_message_id text,
    sender_type         text        NOT NULL CHECK (sender_type = ANY ('{contact,agent,bot,system}'::text[])),
    sender_id           text        NOT NULL DEFAULT '',
    sender_display_name text        NOT NULL DEFAULT '',
    content_type        text        NOT NULL CHECK (content_type = ANY
                          ('{text,image,video,audio,file,sticker,location,unsupported}'::text[])),
    content_text        text        NOT NULL DEFAULT '',
    content_struct      jsonb,
    status              text        NOT NULL CHECK (status = ANY
                          ('{received,pending,sent,failed,unknown}'::text[])),
    error_category      text        CHECK (error_category = ANY
                          ('{auth_error,rate_limit_error,quota_exceeded,invalid_request_error,recipient_error,'
                           'window_closed,network_error,timeout,provider_error,internal_error}'::text[])),
    error_detail        text        CHECK (length(error_detail) <= 512),
    attempts            integer     NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz,
    lease_until         timestamptz,
    lease_owner         text,
    provider_retry_key  uuid,
    request_fingerprint text,
    attachment_count    smallint    NOT NULL DEFAULT 0,
    channel_timestamp   timestamptz NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    -- Whatever the retry worker may send again carries the provider retry key that keeps a
    -- second attempt from delivering twice.
    CHECK (direction = 'inbound' OR status <> ALL ('{pending,unknown}'::text[])
           OR provider_retry_key IS NOT NULL),
    -- Idempotency: a webhook retry or a repeated send request finds the row it made before.
    UNIQUE (tenant_id, channel_account_id, direction, idempotency_key),
    FOREIGN KEY (tenant_id, conversation_id) REFERENCES omnichat.conversations (tenant_id, id)
);
-- The timeline: (channel_timestamp, id) within a conversation, both directions.
CREATE INDEX messages_timeline_idx
    ON omnichat.messages (tenant_id, conversation_id, channel_timestamp, id);
-- The retry worker's queue stays tiny: only outbound messages still in flight.
CREATE INDEX messages_outbound_due_idx
    ON omnichat.messages (next_attempt_at)
    WHERE direction = 'outbound' AND status IN ('pending', 'unknown');
-- Reconciliation of our sends by provider id (echoes, delivery receipts). Inbound messages
-- are found by their idempotency key, so they stay out of this index: one less entry to write
-- per inbound message.
CREATE INDEX messages_external_idx
    ON omnichat.messages (tenant_id, channel_account_id, external_message_id)
    WHERE direction = 'outbound' AND external_message_id IS NOT NULL;

CREATE TABLE omnichat.attachments (
    tenant_id     uuid        NOT NULL,
    id            uuid        NOT NULL,
    message_id    uuid        NOT NULL,
    ordinal       integer     NOT NULL CHECK (ordinal BETWEEN 0 AND 1000),
    kind          text        NOT NULL CHECK (length(kind) BETWEEN 1 AND 32),
    url           text        NOT NULL DEFAULT '' CHECK (length(url) <= 2048),
    mime_type     text        NOT NULL DEFAULT '' CHECK (length(mime_type) <= 256),
    size_bytes    bigint      NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
    name          text        NOT NULL DEFAULT '' CHECK (length(name) <= 512),
    metadata      jsonb       NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, message_id, ordinal),
    FOREIGN KEY (tenant_id, message_id) REFERENCES omnichat.messages (tenant_id, id) ON DELETE CASCADE
);

-- Row-level security: the second wall behind the tenant filter of every statement.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['channel_accounts', 'channel_credentials', 'contacts',
                             'conversations', 'messages', 'attachments']
    LOOP
        EXECUTE format('ALTER TABLE omnichat.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON omnichat.%I '
                       'USING (tenant_id = omnichat.current_tenant()) '
                       'WITH CHECK (tenant_id = omnichat.current_tenant())', t);
    END LOOP;
END
$$;

-- Output shapes. security_invoker makes the views apply the caller's row-level security.
CREATE VIEW omnichat.v_messages WITH (security_invoker = true) AS
SELECT m.tenant_id, m.id, m.channel_account_id, m.conversation_id, m.contact_id, m.direction,
       m.idempotency_key, m.external_message_id, m.sender_type, m.sender_id,
       m.sender_display_name, m.content_type, m.content_text, m.content_struct::text AS content_struct,
       m.status, m.error_category, m.error_detail, m.attempts,
       omnichat.us(m.next_attempt_at) AS next_attempt_at_us,
       m.channel_timestamp,
       omnichat.us(m.channel_timestamp) AS channel_timestamp_us,
       omnichat.us(m.created_at) AS created_at_us,
       omnichat.us(m.updated_at) AS updated_at_us,
       m.provider_retry_key,
       CASE WHEN m.attachment_count > 0 THEN
           (SELECT json_agg(json_build_object(
                       'id', a.id, 'ordinal', a.ordinal, 'kind', a.kind, 'url', a.url,
                       'mime_type', a.mime_type, 'size_bytes', a.size_bytes, 'name', a.name,
                        'metadata', a.metadata, 'created_at_us', omnichat.us(a.created_at))
                       ORDER BY a.ordinal)
              FROM omnichat.attachments a
             WHERE a.tenant_id = m.tenant_id AND a.message_id = m.id)::text
       END AS attachments,
       m.lease_owner, omnichat.us(m.lease_until) AS lease_until_us
  FROM omnichat.messages m;

CREATE VIEW omnichat.v_conversations WITH (security_invoker = true) AS
SELECT c.tenant_id, c.id, c.channel_account_id, c.channel_type, c.thread_key, c.contact_id,
       omnichat.us(c.last_message_at) AS last_message_at_us, c.last_message_preview,
       c.message_count, c.last_activity_at, omnichat.us(c.last_activity_at) AS last_activity_at_us,
       omnichat.us(c.created_at) AS created_at_us, omnichat.us(c.updated_at) AS updated_at_us
  FROM omnichat.conversations c;

CREATE VIEW omnichat.v_channel_accounts WITH (security_invoker = true) AS
SELECT a.tenant_id, a.id, a.channel_type, a.external_account_id, a.display_name, a.status,
       a.last_error_category, omnichat.us(a.last_error_at) AS last_error_at_us,
       omnichat.us(a.last_success_at) AS last_success_at_us,
       (SELECT json_agg(json_build_object('field', c.field, 'key_id', c.key_id,
                                          'ciphertext', encode(c.ciphertext, 'base64'))
                        ORDER BY c.field)
          FROM omnichat.channel_credentials c
         WHERE c.tenant_id = a.tenant_id AND c.channel_account_id = a.id)::text AS credentials,
       omnichat.us(a.created_at) AS created_at_us, omnichat.us(a.updated_at) AS updated_at_us
  FROM omnichat.channel_accounts a;

GRANT USAGE ON SCHEMA omnichat TO omnichat_runtime;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA omnichat TO omnichat_runtime;
GRANT DELETE ON omnichat.channel_credentials TO omnichat_runtime;
-- schema_migrations exists before this file runs (the migrator makes it): history is the
-- owner's alone.
REVOKE ALL ON omnichat.schema_migrations FROM omnichat_runtime;
