-- The trace each saga (order) started in, kept by a service that acts on the
-- order later without an incoming event to continue from (store's kitchen
-- and staff actions), so the events it then emits join the order's trace.
-- Rows are purged with the inbox, after the retention period.
CREATE TABLE saga_traces (
    correlation_id TEXT   PRIMARY KEY,
    traceparent    TEXT   NOT NULL,
    created_at     BIGINT NOT NULL
);
