-- The stores, their menus and the version of each store's catalog.
CREATE TABLE stores (
    store_id        TEXT    PRIMARY KEY,
    name            TEXT    NOT NULL,
    cuisine         TEXT    NOT NULL,
    address         TEXT    NOT NULL,
    catalog_version BIGINT NOT NULL,
    catalog_hash    TEXT    NOT NULL
);

CREATE TABLE menu_items (
    store_id     TEXT    NOT NULL REFERENCES stores (store_id),
    menu_item_id TEXT    NOT NULL,
    position     BIGINT NOT NULL,
    name         TEXT    NOT NULL,
    description  TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    price_minor  BIGINT NOT NULL CHECK (price_minor >= 0),
    PRIMARY KEY (store_id, menu_item_id)
);

-- Paid orders in their store. `lines` is JSON; `currency` is empty and
-- `total_minor` 0 for an order cancelled before its details arrived.
CREATE TABLE store_orders (
    order_id         TEXT    PRIMARY KEY,
    store_id         TEXT    NOT NULL,
    customer_id      TEXT    NOT NULL,
    lines            TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    total_minor      BIGINT NOT NULL,
    delivery_address TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    version          BIGINT NOT NULL,
    reason           TEXT    NOT NULL DEFAULT '',
    received_at      BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- When the auto-kitchen moves it on next; NULL when off or final.
    auto_next_at     BIGINT
);
CREATE INDEX store_orders_by_store ON store_orders (store_id, received_at, order_id);
CREATE INDEX store_orders_auto_next ON store_orders (auto_next_at) WHERE auto_next_at IS NOT NULL;
