-- Exactly-once bridging in both directions (SQLite variant of
-- migrations/postgres/0003; SQLite databases start at this schema, so the
-- PostgreSQL data moves have nothing to move here).

-- Per portal, the newest MAX message accounted for (bridged, sent from Matrix or
-- deliberately skipped), in MAX order: catch-up reads history after it. Updated in
-- the same transaction as the message's mapping. The time anchors CHAT_HISTORY.
ALTER TABLE portals ADD COLUMN last_max_message_id BIGINT;
ALTER TABLE portals ADD COLUMN last_max_time BIGINT;

-- When the MAX edit last bridged to Matrix happened (MAX `updateTime`), so an edit
-- seen again in history is not bridged twice.
ALTER TABLE messages ADD COLUMN edited_ms BIGINT;

-- Matrix events the homeserver delivered, stored before the transaction is
-- acknowledged, and deduplicated on the event id (transaction ids are not unique
-- across homeserver restarts). Rows without done_at are processed again after a
-- restart, in arrival order (`seq`: AUTOINCREMENT never reuses a number); done
-- rows are kept a while to recognise redeliveries.
CREATE TABLE matrix_inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL UNIQUE,
    room_id     TEXT NOT NULL,
    event       TEXT NOT NULL,
    received_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP,
    done_at     TEXT
);
CREATE INDEX matrix_inbox_pending ON matrix_inbox (seq) WHERE done_at IS NULL;
CREATE INDEX matrix_inbox_done ON matrix_inbox (done_at) WHERE done_at IS NOT NULL;

DROP TABLE transactions;

-- Deleted on either side (and redacted on Matrix): kept so that a late echo is
-- still recognised, but no longer redacted again.
ALTER TABLE messages ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;
