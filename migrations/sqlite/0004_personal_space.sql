-- Each user's personal space, holding their portals (as mautrix's personal filtering spaces).
ALTER TABLE users ADD COLUMN space_room TEXT;
