-- Counters of the things that must be rare and are worth knowing about, kept
-- with the data so a crash does not lose them: duplicate deliveries the inbox
-- suppressed (per consumer), re-publishes JetStream's duplicate window dropped.
CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
);
