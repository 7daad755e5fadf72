-- 0005: delivery and read receipts. An outbound message moves sent -> delivered -> read when
-- the provider reports it (Meta: delivery {mids, watermark} and read {watermark} events), only
-- forward, within one conversation. persistence applies a receipt with one UPDATE under the
-- tenant's row-level security (ApplyReceipt); no privileged function is involved.
--
-- delivered and read are final for the send flow like sent: complete_outbound returns such a
-- message as it is (a late answer of a send whose echo and receipts came first).

ALTER TABLE omnichat.messages DROP CONSTRAINT messages_status_check;
ALTER TABLE omnichat.messages ADD CONSTRAINT messages_status_check CHECK (status = ANY
    ('{received,pending,sent,failed,unknown,delivered,read}'::text[]));

CREATE OR REPLACE FUNCTION omnichat.complete_outbound(
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
           AND m.status NOT IN ('sent', 'failed', 'delivered', 'read') AND m.lease_owner IS NOT DISTINCT FROM p_owner
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
        IF r.status IN ('sent', 'failed', 'delivered', 'read') THEN
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
