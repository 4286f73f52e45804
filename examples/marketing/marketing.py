#!/usr/bin/env python3
"""A new team's service, in another language: loyalty coupons from foodmesh's events.

Marketing wants to thank loyal customers: a coupon for every third delivered
order. It needs no change to any foodmesh service or database. It reads the
published contracts (a released buf image, `proto/released/`), adds its own
durable JetStream consumer on the store's `store.v1.order.delivered` events,
and keeps its own state in its own SQLite file.

Each event is applied once: its event id goes into an inbox table in the same
transaction as its effect, and the message is acknowledged only after that
commit. A redelivery (a crash before the ack, a replay) finds the id and
changes nothing; a restart resumes from the consumer's position.

    PYTHONPATH=.tools/marketing python3 examples/marketing/marketing.py \\
        --nats-url nats://127.0.0.1:4222 --db .foodmesh/data/marketing.db

It prints one JSON line per coupon it issues.
"""

import argparse
import asyncio
import json
import signal
import sqlite3
import sys
import time
import uuid
from pathlib import Path

try:
    import nats
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
except ImportError as missing:  # the packages live in .tools/marketing, not in the system's Python
    sys.exit(f"marketing: {missing}; run scripts/bootstrap --test and set PYTHONPATH=.tools/marketing")

ROOT = Path(__file__).resolve().parents[2]
STREAM = "STORE_EVENTS"
SUBJECT = "store.v1.order.delivered"
CONSUMER = "marketing-loyalty"

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (event_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS loyalty (customer_id TEXT PRIMARY KEY, delivered INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS coupons (
    coupon_id        TEXT PRIMARY KEY,
    customer_id      TEXT NOT NULL,
    delivered_orders INTEGER NOT NULL,
    order_id         TEXT NOT NULL,
    issued_at        REAL NOT NULL
);
"""


def latest_contracts() -> Path:
    released = ROOT / "proto" / "released"
    return released / f"foodmesh-{(released / 'LATEST').read_text().strip()}.binpb"


def load_store_event(image: Path):
    """The StoreEvent class and the DELIVERED status number, from a released image.

    A buf image has the shape of a FileDescriptorSet (its extra fields are
    skipped), with every file after its imports, so no code generation is needed.
    """
    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    pool = descriptor_pool.DescriptorPool()
    for file in files:
        pool.Add(file)
    store_event = message_factory.GetMessageClass(pool.FindMessageTypeByName("foodmesh.store.v1.StoreEvent"))
    status = pool.FindEnumTypeByName("foodmesh.store.v1.StoreOrderStatus")
    return store_event, status.values_by_name["STORE_ORDER_STATUS_DELIVERED"].number


class Loyalty:
    """The coupon rule and marketing's own database."""

    def __init__(self, db: Path, every: int):
        db.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.executescript(SCHEMA)
        self.every = every

    def apply(self, deliveries):
        """Applies (event_id, customer_id, order_id) facts in one transaction.

        Returns the coupons issued. A fact seen before changes nothing.
        """
        issued = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for event_id, customer_id, order_id in deliveries:
                if self.conn.execute("INSERT OR IGNORE INTO inbox (event_id) VALUES (?)", (event_id,)).rowcount == 0:
                    continue
                self.conn.execute(
                    "INSERT INTO loyalty (customer_id, delivered) VALUES (?, 1) "
                    "ON CONFLICT (customer_id) DO UPDATE SET delivered = delivered + 1",
                    (customer_id,),
                )
                (count,) = self.conn.execute("SELECT delivered FROM loyalty WHERE customer_id = ?", (customer_id,)).fetchone()
                if count % self.every == 0:
                    coupon = {
                        "coupon_id": f"LOYAL-{uuid.uuid4().hex[:12].upper()}",
                        "customer_id": customer_id,
                        "delivered_orders": count,
                        "order_id": order_id,
                    }
                    self.conn.execute(
                        "INSERT INTO coupons (coupon_id, customer_id, delivered_orders, order_id, issued_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (coupon["coupon_id"], customer_id, count, order_id, time.time()),
                    )
                    issued.append(coupon)
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return issued


async def run(args) -> None:
    store_event, delivered_status = load_store_event(args.contracts)
    loyalty = Loyalty(args.db, args.every)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)

    nc = await nats.connect(args.nats_url, name="marketing", max_reconnect_attempts=-1)
    js = nc.jetstream()
    # Durable and explicit: JetStream remembers what was acknowledged, and
    # redelivers what was not. DeliverPolicy.ALL: a new team starts from the
    # stream's history (7 days), not only from today.
    config = ConsumerConfig(
        durable_name=CONSUMER,
        filter_subject=SUBJECT,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=30,
        max_deliver=10,
        description="marketing: a coupon for every few delivered orders",
    )
    sub = await js.pull_subscribe(SUBJECT, durable=CONSUMER, stream=STREAM, config=config)
    print(json.dumps({"ready": CONSUMER, "stream": STREAM, "subject": SUBJECT}), flush=True)

    while not stop.is_set():
        try:
            messages = await sub.fetch(100, timeout=0.5)
        except asyncio.TimeoutError:  # nothing new (nats-py raises its own subclass, or this one)
            continue
        facts, poison = [], set()
        for msg in messages:
            try:
                event = store_event.FromString(msg.data)
            except Exception as err:  # noqa: BLE001 - any undecodable body is poison
                print(json.dumps({"poison": msg.subject, "error": str(err)}), file=sys.stderr, flush=True)
                poison.add(id(msg))
                continue
            change = event.order_status_changed
            if event.WhichOneof("event") == "order_status_changed" and change.status == delivered_status:
                facts.append((event.metadata.event_id, change.customer_id, change.order_id))
        for coupon in loyalty.apply(facts):
            print(json.dumps({"coupon": coupon}), flush=True)
        # Only after the commit: a crash before this line means a redelivery,
        # which the inbox turns into nothing.
        for msg in messages:
            await (msg.term() if id(msg) in poison else msg.ack())
    # The acks are plain publishes: flush them before closing.
    await nc.flush()
    await nc.close()
    print(json.dumps({"stopped": CONSUMER}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--db", type=Path, default=Path(".foodmesh/data/marketing.db"), help="marketing's own SQLite file")
    parser.add_argument("--every", type=int, default=3, help="a coupon for every this many delivered orders")
    parser.add_argument("--contracts", type=Path, default=None, help="a released contract image (default: the latest)")
    args = parser.parse_args()
    if args.every < 1:
        parser.error("--every must be at least 1")
    args.contracts = args.contracts or latest_contracts()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
