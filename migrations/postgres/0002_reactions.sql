-- Reactions on bridged messages: which Matrix m.reaction event stands for which
-- MAX user's reaction. MAX allows one reaction per user and message.
CREATE TABLE reactions (
    chat_id        BIGINT NOT NULL,
    receiver       BIGINT NOT NULL,
    max_message_id BIGINT NOT NULL,
    -- MAX user id of whoever reacted (the login's own id for the Matrix user).
    max_user_id    BIGINT NOT NULL,
    emoji          TEXT NOT NULL,
    event_id       TEXT NOT NULL UNIQUE,
    room_id        TEXT NOT NULL,
    PRIMARY KEY (chat_id, receiver, max_message_id, max_user_id),
    FOREIGN KEY (chat_id, receiver) REFERENCES portals (chat_id, receiver) ON DELETE CASCADE
);
