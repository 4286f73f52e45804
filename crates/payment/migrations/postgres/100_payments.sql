-- One row per payment attempt: captured, declined (kept so that a retried
-- charge is declined again without reaching the card network), or refunded.
CREATE TABLE payments (
    payment_id      TEXT    PRIMARY KEY,
    -- The caller's idempotency key (the order service sends the order id).
    idempotency_key TEXT    NOT NULL UNIQUE,
    -- At most one payment per order.
    order_id        TEXT    NOT NULL UNIQUE,
    customer_id     TEXT    NOT NULL,
    currency        TEXT    NOT NULL,
    amount_minor    BIGINT  NOT NULL CHECK (amount_minor > 0),
    -- A digest of the charge parameters: a repeated key must match it.
    fingerprint     TEXT    NOT NULL,
    status          TEXT    NOT NULL CHECK (status IN ('CAPTURED', 'DECLINED', 'REFUNDED')),
    decline_reason  TEXT    NOT NULL DEFAULT '',
    refund_reason   TEXT    NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    refunded_at     BIGINT
);
CREATE INDEX payments_customer ON payments (customer_id, created_at);
