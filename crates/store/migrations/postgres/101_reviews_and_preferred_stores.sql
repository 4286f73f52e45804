-- Customers' reviews of stores, one per delivered order. `request_id` is the
-- attempt that posted it, so a retry of that attempt gets the same review.
CREATE TABLE reviews (
    review_id   TEXT    PRIMARY KEY,
    order_id    TEXT    NOT NULL UNIQUE,
    store_id    TEXT    NOT NULL,
    customer_id TEXT    NOT NULL,
    rating      BIGINT  NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment     TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    posted_at   BIGINT  NOT NULL
);
CREATE INDEX reviews_by_store ON reviews (store_id, posted_at, review_id);

-- The stores each customer registered as preferred.
CREATE TABLE preferred_stores (
    customer_id TEXT    NOT NULL,
    store_id    TEXT    NOT NULL REFERENCES stores (store_id),
    added_at    BIGINT  NOT NULL,
    PRIMARY KEY (customer_id, store_id)
);
CREATE INDEX preferred_stores_by_customer ON preferred_stores (customer_id, added_at, store_id);
