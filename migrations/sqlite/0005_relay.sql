-- Relay mode: the portal's owner lets Matrix users without a MAX login speak in
-- it through their account, each message carrying its sender's name.
ALTER TABLE portals ADD COLUMN relay BOOLEAN NOT NULL DEFAULT false;
