-- Exactly-once bridging in both directions.

-- Per portal, the newest MAX message accounted for (bridged, sent from Matrix or
-- deliberately skipped), in MAX order: catch-up reads history after it. Updated in
-- the same transaction as the message's mapping. The time anchors CHAT_HISTORY.
ALTER TABLE portals
    ADD COLUMN last_max_message_id BIGINT,
    ADD COLUMN last_max_time       BIGINT;

UPDATE portals p SET
    last_max_message_id = m.max_message_id,
    last_max_time       = m.timestamp_ms
FROM (
    SELECT DISTINCT ON (chat_id, receiver) chat_id, receiver, max_message_id, timestamp_ms
    FROM messages
    ORDER BY chat_id, receiver, max_message_id DESC
) m
WHERE p.chat_id = m.chat_id AND p.receiver = m.receiver;

-- Portals without messages start at their creation time, as catch-up did before.
UPDATE portals p SET last_max_message_id = 0, last_max_time = kv.value::BIGINT
FROM kv
WHERE p.last_max_message_id IS NULL
  AND kv.key = 'portal_since:' || p.receiver || ':' || p.chat_id
  AND kv.value ~ '^[0-9]+$';
DELETE FROM kv WHERE key LIKE 'portal_since:%';

-- When the MAX edit last bridged to Matrix happened (MAX `updateTime`), so an edit
-- seen again in history is not bridged twice.
ALTER TABLE messages ADD COLUMN edited_ms BIGINT;

-- Matrix events the homeserver delivered, stored before the transaction is
-- acknowledged, and deduplicated on the event id (transaction ids are not unique
-- across homeserver restarts). Rows without done_at are processed again after a
-- restart, in arrival order; done rows are kept a while to recognise redeliveries.
CREATE TABLE matrix_inbox (
    event_id    TEXT PRIMARY KEY,
    room_id     TEXT NOT NULL,
    seq         BIGSERIAL NOT NULL,
    -- The event as delivered (JSON text: JSONB would refuse some valid strings).
    event       TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at     TIMESTAMPTZ
);
CREATE INDEX matrix_inbox_pending ON matrix_inbox (seq) WHERE done_at IS NULL;
CREATE INDEX matrix_inbox_done ON matrix_inbox (done_at) WHERE done_at IS NOT NULL;

DROP TABLE transactions;

-- Deleted on either side (and redacted on Matrix): kept so that a late echo is
-- still recognised, but no longer redacted again.
ALTER TABLE messages ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;
