-- The order service's own copy of the stores' menus, fed by catalog events,
-- so orders are priced and taken while the store service is down.
CREATE TABLE catalog_stores (
    store_id        TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    catalog_version INTEGER NOT NULL
);

CREATE TABLE catalog_items (
    store_id     TEXT    NOT NULL,
    menu_item_id TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    price_minor  INTEGER NOT NULL,
    PRIMARY KEY (store_id, menu_item_id)
) WITHOUT ROWID; -- small rows keyed by text: one b-tree instead of two

-- One row per PlaceOrder request, written before payment is called: the
-- idempotency record of the request (unique per customer and request id), and
-- the trace of a charge whose outcome is not known yet (PENDING). Customers
-- never see these rows. Order ids are time-ordered, so their index appends.
CREATE TABLE order_attempts (
    order_id       TEXT    PRIMARY KEY,
    customer_id    TEXT    NOT NULL,
    request_id     TEXT    NOT NULL,
    fingerprint    TEXT    NOT NULL,
    -- The order as priced at the first attempt (JSON), so a retry charges
    -- exactly the same amount even if the menu changed since.
    priced         TEXT    NOT NULL,
    state          TEXT    NOT NULL CHECK (state IN ('PENDING', 'PLACED', 'DECLINED')),
    payment_id     TEXT    NOT NULL DEFAULT '',
    decline_reason TEXT    NOT NULL DEFAULT '',
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    UNIQUE (customer_id, request_id)
);
CREATE INDEX order_attempts_pending ON order_attempts (created_at) WHERE state = 'PENDING';

-- Placed (paid) orders and their status view. `lines` and `timeline` are JSON.
CREATE TABLE orders (
    order_id         TEXT    PRIMARY KEY,
    customer_id      TEXT    NOT NULL,
    store_id         TEXT    NOT NULL,
    store_name       TEXT    NOT NULL,
    lines            TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    total_minor      INTEGER NOT NULL,
    delivery_address TEXT    NOT NULL,
    payment_id       TEXT    NOT NULL,
    placed_at        INTEGER NOT NULL,
    kitchen_status   TEXT,
    kitchen_version  INTEGER NOT NULL DEFAULT 0,
    cancellation     TEXT    NOT NULL,
    refunded_at      INTEGER,
    status           TEXT    NOT NULL,
    status_reason    TEXT    NOT NULL DEFAULT '',
    timeline         TEXT    NOT NULL,
    updated_at       INTEGER NOT NULL,
    version          INTEGER NOT NULL
);
CREATE INDEX orders_by_customer ON orders (customer_id, placed_at, order_id);
