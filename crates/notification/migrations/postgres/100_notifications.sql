-- Every message to a customer: one per order and kind of change, whatever
-- the number of times the event behind it is delivered.
CREATE TABLE notifications (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- A UUID for clients; rows are found by seq, customer or order.
    notification_id TEXT    NOT NULL,
    customer_id     TEXT    NOT NULL,
    order_id        TEXT    NOT NULL,
    kind            TEXT    NOT NULL,
    title           TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('PENDING', 'SENT', 'FAILED')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT    NOT NULL DEFAULT '',
    occurred_at     BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    next_attempt_at BIGINT,
    UNIQUE (order_id, kind)
);
CREATE INDEX notifications_by_customer ON notifications (customer_id, seq);
CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'PENDING';
