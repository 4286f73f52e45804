-- Transactional outbox: an event is written in the same transaction as the
-- change that caused it; the relay publishes it to JetStream and sets sent_at
-- only once JetStream acknowledged it. Sent rows are kept for a retention
-- period so a stream can be fed again.
CREATE TABLE outbox (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A UUID: the Nats-Msg-Id header. Not indexed: nothing looks rows up by it.
    event_id   TEXT   NOT NULL,
    subject    TEXT   NOT NULL,
    payload    BYTEA  NOT NULL,
    headers    TEXT   NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    sent_at    BIGINT
);
CREATE INDEX outbox_unsent ON outbox (id) WHERE sent_at IS NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Inbox: the ids of the events each consumer applied, written in the same
-- transaction as the effect, so a redelivered event changes nothing.
CREATE TABLE inbox (
    consumer     TEXT   NOT NULL,
    event_id     TEXT   NOT NULL,
    processed_at BIGINT NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX inbox_processed_at ON inbox (processed_at);
