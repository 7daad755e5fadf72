-- 0007: the depth of the retry queue for /metrics (omnichat_retry_queue_messages).
--
-- Outbound messages still in flight (pending or unknown with a next attempt), by channel type
-- and by whether their next attempt is due now. Across tenants, hence SECURITY DEFINER like the
-- claim; it only reads, returns counts (no tenant, no content), and stops counting at p_cap rows
-- so that a runaway queue cannot make a scrape expensive: the partial index
-- messages_outbound_due_idx holds exactly these rows.

CREATE FUNCTION omnichat.retry_queue_depth(p_cap integer)
    RETURNS TABLE (channel_type text, due boolean, messages bigint)
    LANGUAGE plpgsql
    STABLE
    SECURITY DEFINER
    SET search_path = omnichat, pg_temp
AS $$
BEGIN
    IF p_cap IS NULL OR p_cap NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'cap: must be between 1 and 1000000' USING ERRCODE = 'OCIA0';
    END IF;
    RETURN QUERY
        SELECT a.channel_type, q.next_attempt_at <= now(), count(*)
          FROM (SELECT m.tenant_id, m.channel_account_id, m.next_attempt_at
                  FROM messages m
                 WHERE m.direction = 'outbound' AND m.status IN ('pending', 'unknown')
                   AND m.next_attempt_at IS NOT NULL
                 LIMIT p_cap) q
          JOIN channel_accounts a ON a.tenant_id = q.tenant_id AND a.id = q.channel_account_id
         GROUP BY 1, 2;
END
$$;

REVOKE ALL ON FUNCTION omnichat.retry_queue_depth(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION omnichat.retry_queue_depth(integer) TO omnichat_runtime;
