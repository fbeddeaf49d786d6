-- Initial schema of maxbridge: everything the bridge needs to resume after a restart.
-- Times the bridge does not act on (created_at/updated_at) are for operators; MAX
-- timestamps are kept as the protocol sends them (milliseconds since the epoch).

-- Matrix users who talked to the bridge bot.
CREATE TABLE users (
    mxid            TEXT PRIMARY KEY,
    -- The DM room with the bot where this user runs commands.
    management_room TEXT UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A Matrix user's logged-in MAX account (at most one per Matrix user, and a MAX
-- account bridged by at most one Matrix user).
CREATE TABLE logins (
    mxid         TEXT PRIMARY KEY REFERENCES users (mxid) ON DELETE CASCADE,
    max_user_id  BIGINT NOT NULL UNIQUE,
    token        TEXT NOT NULL,
    -- Stable per login: MAX ties the token to the device id it was issued for.
    device_id    TEXT NOT NULL,
    state        TEXT NOT NULL,
    display_name TEXT,
    phone        TEXT,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A MAX chat as seen by one login (receiver); the same MAX chat seen by two
-- logins is two portals, so each user's view stays their own.
CREATE TABLE portals (
    chat_id       BIGINT NOT NULL,
    receiver      BIGINT NOT NULL,
    room_id       TEXT UNIQUE,
    kind          TEXT NOT NULL CHECK (kind IN ('dialog', 'chat', 'channel')),
    name          TEXT,
    topic         TEXT,
    avatar_url    TEXT,
    avatar_mxc    TEXT,
    -- For dialogs: the MAX user on the other side.
    other_user_id BIGINT,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (chat_id, receiver)
);
CREATE INDEX portals_receiver_other_user ON portals (receiver, other_user_id);

-- Matrix puppets of MAX users.
CREATE TABLE ghosts (
    max_user_id  BIGINT PRIMARY KEY,
    mxid         TEXT NOT NULL UNIQUE,
    display_name TEXT,
    avatar_url   TEXT,
    avatar_mxc   TEXT,
    registered   BOOLEAN NOT NULL DEFAULT false,
    name_set     BOOLEAN NOT NULL DEFAULT false,
    avatar_set   BOOLEAN NOT NULL DEFAULT false,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Which Matrix event(s) a MAX message became; one MAX message may be several
-- parts (e.g. text plus attachments), each its own event.
CREATE TABLE messages (
    chat_id        BIGINT NOT NULL,
    receiver       BIGINT NOT NULL,
    max_message_id BIGINT NOT NULL,
    part           INTEGER NOT NULL,
    -- Not unique: a Matrix message longer than MAX's limit is sent as several
    -- MAX messages, each mapped to the one event.
    event_id       TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    sender         BIGINT NOT NULL,
    timestamp_ms   BIGINT NOT NULL,
    PRIMARY KEY (chat_id, receiver, max_message_id, part),
    FOREIGN KEY (chat_id, receiver) REFERENCES portals (chat_id, receiver) ON DELETE CASCADE
);
CREATE INDEX messages_portal_time ON messages (chat_id, receiver, timestamp_ms);
CREATE INDEX messages_event ON messages (event_id);

-- Appservice transactions already handled (the homeserver retries until acked).
CREATE TABLE transactions (
    txn_id     TEXT PRIMARY KEY,
    handled_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Small named values that must survive restarts (e.g. MAX sync markers).
CREATE TABLE kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
