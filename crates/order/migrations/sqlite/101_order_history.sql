-- The facts each order's status view is derived from (JSON, each fact once),
-- so a view built from events in any arrival order, or rebuilt by replaying
-- the streams, is the same. Empty for rows written before this column: their
-- facts are inferred from the timeline when read.
ALTER TABLE orders ADD COLUMN history TEXT NOT NULL DEFAULT '';
