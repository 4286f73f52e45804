//! Every SQL statement of the order service.

use foodmesh_platform::{
    db::{Migrations, Params, batches, padded, padded_len},
    money::{Currency, Money},
    paging::Cursor,
    time::Timestamp,
};
use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sqlx::{Any, AnyConnection, Executor, Row, any::AnyRow};

use crate::domain::{
    order::{Cancellation, Fact, KitchenStatus, Order, OrderStatus, StatusChange},
    placing::{Attempt, AttemptState, Menu, MenuEntry, OrderId, PricedLine, PricedOrder},
};

/// The order service's migrations.
pub fn migrations() -> Migrations {
    Migrations { sqlite: sqlx::migrate!("migrations/sqlite"), postgres: sqlx::migrate!("migrations/postgres") }
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("order row has an invalid {what}").into())
}

fn money(currency: &str, amount: i64) -> Result<Money, sqlx::Error> {
    let currency = Currency::parse(currency).map_err(|_| corrupt("currency"))?;
    Money::new(currency, amount).map_err(|_| corrupt("amount"))
}

// ---- catalog copy -----------------------------------------------------------

/// The stored catalog version of a store (0 if unknown).
pub async fn catalog_version(conn: &mut AnyConnection, store_id: &str) -> Result<i64, sqlx::Error> {
    let row =
        sqlx::query("SELECT catalog_version FROM catalog_stores WHERE store_id = $1").bind(store_id).fetch_optional(conn).await?;
    row.map_or(Ok(0), |r| r.try_get("catalog_version"))
}

/// Replaces a store's menu.
pub async fn save_catalog(conn: &mut AnyConnection, menu: &Menu, version: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO catalog_stores (store_id, name, catalog_version) VALUES ($1, $2, $3) \
         ON CONFLICT (store_id) DO UPDATE SET name = $2, catalog_version = $3",
    )
    .bind(&menu.store_id)
    .bind(&menu.store_name)
    .bind(version)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM catalog_items WHERE store_id = $1").bind(&menu.store_id).execute(&mut *conn).await?;
    for item in &menu.items {
        sqlx::query(
            "INSERT INTO catalog_items (store_id, menu_item_id, name, currency, price_minor) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&menu.store_id)
        .bind(&item.menu_item_id)
        .bind(&item.name)
        .bind(item.price.currency().code())
        .bind(item.price.amount_minor())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A store's menu, if the catalog has it.
pub async fn menu(conn: &mut AnyConnection, store_id: &str) -> Result<Option<Menu>, sqlx::Error> {
    let Some(store) =
        sqlx::query("SELECT name FROM catalog_stores WHERE store_id = $1").bind(store_id).fetch_optional(&mut *conn).await?
    else {
        return Ok(None);
    };
    let items = sqlx::query("SELECT menu_item_id, name, currency, price_minor FROM catalog_items WHERE store_id = $1")
        .bind(store_id)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| {
            Ok(MenuEntry {
                menu_item_id: r.try_get("menu_item_id")?,
                name: r.try_get("name")?,
                price: money(r.try_get("currency")?, r.try_get("price_minor")?)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(Menu { store_id: store_id.to_owned(), store_name: store.try_get("name")?, items }))
}

// ---- attempts ---------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct LineJson {
    id: String,
    name: String,
    qty: u32,
    price: i64,
}

#[derive(Serialize, Deserialize)]
struct PricedJson {
    store_id: String,
    store_name: String,
    currency: String,
    total: i64,
    address: String,
    lines: Vec<LineJson>,
}

fn lines_json(lines: &[PricedLine]) -> Vec<LineJson> {
    lines
        .iter()
        .map(|l| LineJson {
            id: l.menu_item_id.clone(),
            name: l.name.clone(),
            qty: l.quantity,
            price: l.unit_price.amount_minor(),
        })
        .collect()
}

fn lines_from_json(lines: Vec<LineJson>, currency: &str) -> Result<Vec<PricedLine>, sqlx::Error> {
    lines
        .into_iter()
        .map(|l| {
            let unit_price = money(currency, l.price)?;
            let line_total = unit_price.checked_mul(l.qty).map_err(|_| corrupt("line"))?;
            Ok(PricedLine { menu_item_id: l.id, name: l.name, quantity: l.qty, unit_price, line_total })
        })
        .collect()
}

/// The attempt a customer's request created (or is creating).
pub async fn attempt<'c>(
    db: impl Executor<'c, Database = Any>,
    customer_id: &str,
    request_id: &str,
) -> Result<Option<Attempt>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT order_id, fingerprint, priced, state, payment_id, decline_reason FROM order_attempts \
         WHERE customer_id = $1 AND request_id = $2",
    )
    .bind(customer_id)
    .bind(request_id)
    .fetch_optional(db)
    .await?;
    row.as_ref().map(attempt_row).transpose()
}

/// The attempts of `order_ids` that are still PENDING, with their customer:
/// charges whose order was not committed (yet).
pub async fn pending_attempts(conn: &mut AnyConnection, order_ids: &[&str]) -> Result<Vec<(Attempt, String)>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut pending = Vec::new();
    for chunk in order_ids.chunks(IN_LIST_CHUNK) {
        let sql = format!(
            "SELECT order_id, customer_id, fingerprint, priced, state, payment_id, decline_reason FROM order_attempts \
             WHERE state = 'PENDING' AND order_id IN ({})",
            Params::new(conn).in_list(chunk.len())
        );
        // The statement holds only placeholders; every id is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in padded(chunk) {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            pending.push((attempt_row(&row)?, row.try_get("customer_id")?));
        }
    }
    Ok(pending)
}

/// The most ids one `IN` list takes: a padded list stays far below every
/// engine's limit on bound parameters however many ids a caller passes (the
/// view's rebuild can pass thousands). A power of two, so a full chunk needs
/// no padding.
const IN_LIST_CHUNK: usize = 256;

fn attempt_row(row: &AnyRow) -> Result<Attempt, sqlx::Error> {
    let priced: PricedJson = serde_json::from_str(row.try_get("priced")?).map_err(|_| corrupt("priced order"))?;
    let state = match row.try_get::<&str, _>("state")? {
        "PENDING" => AttemptState::Pending,
        "PLACED" => AttemptState::Placed,
        "DECLINED" => AttemptState::Declined,
        _ => return Err(corrupt("attempt state")),
    };
    Ok(Attempt {
        order_id: OrderId::from_existing(row.try_get::<String, _>("order_id")?),
        fingerprint: row.try_get("fingerprint")?,
        priced: PricedOrder {
            lines: lines_from_json(priced.lines, &priced.currency)?,
            total: money(&priced.currency, priced.total)?,
            store_id: priced.store_id,
            store_name: priced.store_name,
            delivery_address: priced.address,
        },
        state,
        payment_id: row.try_get("payment_id")?,
        decline_reason: row.try_get("decline_reason")?,
    })
}

/// A new attempt to record, with who made it.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// The attempt (PENDING).
    pub attempt: Attempt,
    /// The customer.
    pub customer_id: String,
    /// Their request id.
    pub request_id: String,
}

/// Records new attempts as PENDING, a statement per [`batches`]. Returns the order ids
/// recorded now; an id missing from it lost to an attempt of the same customer
/// and request id (a repeat, or a concurrent request).
pub async fn insert_attempts(conn: &mut AnyConnection, attempts: &[NewAttempt]) -> Result<HashSet<String>, sqlx::Error> {
    if attempts.is_empty() {
        return Ok(HashSet::new());
    }
    let now = Timestamp::now().as_micros();
    let mut recorded = HashSet::with_capacity(attempts.len());
    for batch in batches(attempts, 64) {
        let sql = format!(
            "INSERT INTO order_attempts (order_id, customer_id, request_id, fingerprint, priced, state, created_at, updated_at) \
             VALUES {} ON CONFLICT (customer_id, request_id) DO NOTHING RETURNING order_id",
            Params::new(conn).rows(batch.len(), 8)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for new in batch {
            let p = &new.attempt.priced;
            let priced = PricedJson {
                store_id: p.store_id.clone(),
                store_name: p.store_name.clone(),
                currency: p.total.currency().code().to_owned(),
                total: p.total.amount_minor(),
                address: p.delivery_address.clone(),
                lines: lines_json(&p.lines),
            };
            query = query
                .bind(new.attempt.order_id.as_str())
                .bind(&new.customer_id)
                .bind(&new.request_id)
                .bind(&new.attempt.fingerprint)
                .bind(serde_json::to_string(&priced).map_err(|e| sqlx::Error::Encode(e.into()))?)
                .bind("PENDING")
                .bind(now)
                .bind(now);
        }
        recorded.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(recorded)
}

/// Settles PENDING attempts as PLACED with their payments, a statement per
/// 64 attempts. Returns the ids settled now; an id missing from it was settled before.
pub async fn settle_placed(conn: &mut AnyConnection, placed: &[(&OrderId, &str)]) -> Result<HashSet<String>, sqlx::Error> {
    if placed.is_empty() {
        return Ok(HashSet::new());
    }
    let now = Timestamp::now().as_micros();
    let mut settled = HashSet::with_capacity(placed.len());
    for batch in placed.chunks(64) {
        // Padded (see `Params`): a repeated arm or id changes nothing.
        let mut p = Params::new(conn);
        let updated_at = p.value();
        let cases: Vec<String> = (0..padded_len(batch.len())).map(|_| format!("WHEN {} THEN {}", p.value(), p.value())).collect();
        let ids = p.in_list(batch.len());
        let sql = format!(
            "UPDATE order_attempts SET state = 'PLACED', updated_at = {updated_at}, payment_id = CASE order_id {} END \
             WHERE state = 'PENDING' AND order_id IN ({ids}) RETURNING order_id",
            cases.join(" ")
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).bind(now);
        for (order_id, payment_id) in padded(batch) {
            query = query.bind(order_id.as_str()).bind(*payment_id);
        }
        for (order_id, _) in padded(batch) {
            query = query.bind(order_id.as_str());
        }
        settled.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(settled)
}

/// Settles a PENDING attempt. Returns false if it was settled already.
pub async fn settle_attempt(
    db: impl Executor<'_, Database = Any>,
    order_id: &OrderId,
    state: AttemptState,
    payment_id: &str,
    decline_reason: &str,
) -> Result<bool, sqlx::Error> {
    let state = match state {
        AttemptState::Pending => "PENDING",
        AttemptState::Placed => "PLACED",
        AttemptState::Declined => "DECLINED",
    };
    let done = sqlx::query(
        "UPDATE order_attempts SET state = $2, payment_id = $3, decline_reason = $4, updated_at = $5 \
         WHERE order_id = $1 AND state = 'PENDING'",
    )
    .bind(order_id.as_str())
    .bind(state)
    .bind(payment_id)
    .bind(decline_reason)
    .bind(Timestamp::now().as_micros())
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---- orders -----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct ChangeJson {
    status: String,
    at: i64,
    note: String,
}

/// A fact of an order's history. Kitchen facts carry the kitchen state.
#[derive(Serialize, Deserialize)]
struct FactJson {
    kind: String,
    at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    reason: String,
}

fn history_json(history: &[Fact]) -> Result<String, sqlx::Error> {
    let json: Vec<FactJson> = history
        .iter()
        .map(|f| {
            let (kind, kitchen, reason) = match f {
                Fact::Placed { .. } => ("PLACED", None, ""),
                Fact::CancellationRequested { .. } => ("CANCELLATION_REQUESTED", None, ""),
                Fact::Kitchen { status, version, reason, .. } => ("KITCHEN", Some((*status, *version)), reason.as_str()),
                Fact::CancellationRefused { status, version, .. } => ("CANCELLATION_REFUSED", Some((*status, *version)), ""),
                Fact::Refunded { .. } => ("REFUNDED", None, ""),
            };
            FactJson {
                kind: kind.to_owned(),
                at: f.at().as_micros(),
                status: kitchen.map(|(s, _)| kitchen_text(s).to_owned()),
                version: kitchen.map(|(_, v)| v),
                reason: reason.to_owned(),
            }
        })
        .collect();
    serde_json::to_string(&json).map_err(|e| sqlx::Error::Encode(e.into()))
}

fn history_from_json(text: &str) -> Result<Vec<Fact>, sqlx::Error> {
    let json: Vec<FactJson> = serde_json::from_str(text).map_err(|_| corrupt("history"))?;
    json.into_iter()
        .map(|f| {
            let at = Timestamp::from_micros(f.at);
            let kitchen = || -> Result<(KitchenStatus, i64), sqlx::Error> {
                Ok((kitchen_from(f.status.as_deref().unwrap_or_default())?, f.version.ok_or_else(|| corrupt("history"))?))
            };
            Ok(match f.kind.as_str() {
                "PLACED" => Fact::Placed { at },
                "CANCELLATION_REQUESTED" => Fact::CancellationRequested { at },
                "KITCHEN" => {
                    let (status, version) = kitchen()?;
                    Fact::Kitchen { status, version, reason: f.reason.clone(), at }
                }
                "CANCELLATION_REFUSED" => {
                    let (status, version) = kitchen()?;
                    Fact::CancellationRefused { status, version, at }
                }
                "REFUNDED" => Fact::Refunded { at },
                _ => return Err(corrupt("history")),
            })
        })
        .collect()
}

/// The facts of a row written before orders kept their history, inferred
/// from its timeline: the store numbers kitchen states 1, 2, ... in order.
/// `foodmesh-order rebuild-view` replaces them with the facts of the streams.
fn legacy_history(order: &Order) -> Vec<Fact> {
    let mut facts = vec![Fact::Placed { at: order.placed_at }];
    let mut version = 0;
    for change in &order.timeline {
        let kitchen = match change.status {
            OrderStatus::Placed => continue,
            OrderStatus::CancellationRequested => {
                facts.push(Fact::CancellationRequested { at: change.occurred_at });
                continue;
            }
            OrderStatus::Accepted => KitchenStatus::Received,
            OrderStatus::Cooking => KitchenStatus::Cooking,
            OrderStatus::Delivering => KitchenStatus::Delivering,
            OrderStatus::Delivered => KitchenStatus::Delivered,
            OrderStatus::Cancelled => KitchenStatus::Cancelled,
            OrderStatus::Rejected => KitchenStatus::Rejected,
        };
        version += 1;
        let version = match order.kitchen {
            Some((status, stored)) if status == kitchen => stored.max(version),
            _ => version,
        };
        let reason = if matches!(kitchen, KitchenStatus::Cancelled | KitchenStatus::Rejected) {
            order.status_reason.clone()
        } else {
            String::new()
        };
        facts.push(Fact::Kitchen { status: kitchen, version, reason, at: change.occurred_at });
    }
    if order.cancellation == Cancellation::Refused
        && let Some((status, version)) = order.kitchen
    {
        facts.push(Fact::CancellationRefused { status, version, at: order.updated_at });
    }
    if let Some(at) = order.refunded_at {
        facts.push(Fact::Refunded { at });
    }
    facts
}

/// `SELECT` of every order column with a condition, as a static string.
macro_rules! select_orders_where {
    ($condition:literal) => {
        concat!(
            "SELECT order_id, customer_id, store_id, store_name, lines, currency, total_minor, delivery_address, ",
            "payment_id, placed_at, kitchen_status, kitchen_version, cancellation, refunded_at, status, status_reason, ",
            "timeline, updated_at, version, history FROM orders WHERE ",
            $condition
        )
    };
}

/// An order by id.
pub async fn order<'c>(db: impl Executor<'c, Database = Any>, order_id: &str) -> Result<Option<Order>, sqlx::Error> {
    sqlx::query(select_orders_where!("order_id = $1")).bind(order_id).fetch_optional(db).await?.map(|r| order_row(&r)).transpose()
}

/// The orders among `order_ids` that exist, by id.
pub async fn orders_by_ids(conn: &mut AnyConnection, order_ids: &[&str]) -> Result<Vec<Order>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut orders = Vec::with_capacity(order_ids.len());
    for chunk in order_ids.chunks(IN_LIST_CHUNK) {
        let sql = format!("{}({})", select_orders_where!("order_id IN "), Params::new(conn).in_list(chunk.len()));
        // The statement holds only placeholders; every id is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for id in padded(chunk) {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            orders.push(order_row(&row)?);
        }
    }
    Ok(orders)
}

/// Every order in id order, a page at a time: the next `limit` after `after`.
pub async fn orders_after<'c>(db: impl Executor<'c, Database = Any>, after: &str, limit: i64) -> Result<Vec<Order>, sqlx::Error> {
    sqlx::query(select_orders_where!("order_id > $1 ORDER BY order_id LIMIT $2"))
        .bind(after)
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(order_row)
        .collect()
}

/// A page of a customer's orders, newest first.
pub async fn orders_of_customer<'c>(
    db: impl Executor<'c, Database = Any>,
    customer_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Order>, sqlx::Error> {
    let (key, id) = after.map_or((i64::MAX, String::new()), |c| (c.key, c.id.clone()));
    sqlx::query(select_orders_where!(
        "customer_id = $1 AND (placed_at < $2 OR (placed_at = $2 AND order_id < $3 AND $3 <> '')) \
         ORDER BY placed_at DESC, order_id DESC LIMIT $4"
    ))
    .bind(customer_id)
    .bind(key)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?
    .iter()
    .map(order_row)
    .collect()
}

/// How many orders the view holds in each status (the `foodmesh_orders`
/// gauge), every status included: a status whose last order moved on reads
/// 0, where leaving it out would leave the gauge at its last count.
pub async fn count_by_status<'c>(db: impl Executor<'c, Database = Any>) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT status, COUNT(*) FROM orders GROUP BY status").fetch_all(db).await?;
    let counts = rows
        .iter()
        .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
        .collect::<Result<HashMap<String, i64>, sqlx::Error>>()?;
    Ok(STATUSES
        .iter()
        .map(|s| {
            let name = status_name(*s);
            (name.to_owned(), counts.get(name).copied().unwrap_or(0))
        })
        .collect())
}

/// Stores newly placed orders, a statement per [`batches`].
pub async fn insert_orders(conn: &mut AnyConnection, orders: &[Order]) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 20;
    for chunk in batches(orders, 32) {
        let sql = format!(
            "INSERT INTO orders (order_id, customer_id, store_id, store_name, lines, currency, total_minor, delivery_address, \
             payment_id, placed_at, kitchen_status, kitchen_version, cancellation, refunded_at, status, status_reason, timeline, \
             updated_at, version, history) VALUES {}",
            Params::new(conn).rows(chunk.len(), COLUMNS)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for o in chunk {
            query = query
                .bind(o.id.as_str())
                .bind(&o.customer_id)
                .bind(&o.store_id)
                .bind(&o.store_name)
                .bind(serde_json::to_string(&lines_json(&o.lines)).map_err(|e| sqlx::Error::Encode(e.into()))?)
                .bind(o.total.currency().code().to_owned())
                .bind(o.total.amount_minor())
                .bind(&o.delivery_address)
                .bind(&o.payment_id)
                .bind(o.placed_at.as_micros())
                .bind(o.kitchen.map(|(s, _)| kitchen_text(s)))
                .bind(o.kitchen.map_or(0, |(_, v)| v))
                .bind(cancellation_text(o.cancellation))
                .bind(o.refunded_at.map(Timestamp::as_micros))
                .bind(status_name(o.status))
                .bind(&o.status_reason)
                .bind(timeline_json(&o.timeline)?)
                .bind(o.updated_at.as_micros())
                .bind(o.version)
                .bind(history_json(&o.history)?);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Saves the view of an order if it is still at `expected_version`. Returns
/// false when another writer changed it first.
pub async fn update_order(conn: &mut AnyConnection, o: &Order, expected_version: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE orders SET kitchen_status = $3, kitchen_version = $4, cancellation = $5, refunded_at = $6, status = $7, \
         status_reason = $8, timeline = $9, updated_at = $10, version = $11, history = $12 \
         WHERE order_id = $1 AND version = $2",
    )
    .bind(o.id.as_str())
    .bind(expected_version)
    .bind(o.kitchen.map(|(s, _)| kitchen_text(s)))
    .bind(o.kitchen.map_or(0, |(_, v)| v))
    .bind(cancellation_text(o.cancellation))
    .bind(o.refunded_at.map(Timestamp::as_micros))
    .bind(status_name(o.status))
    .bind(&o.status_reason)
    .bind(timeline_json(&o.timeline)?)
    .bind(o.updated_at.as_micros())
    .bind(o.version)
    .bind(history_json(&o.history)?)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Saves the view of many orders, a statement per 64 orders, each only if it is still
/// at the version it was read at. Returns the ids saved; a missing one was
/// changed by another writer first.
pub async fn update_orders(conn: &mut AnyConnection, orders: &[(&Order, i64)]) -> Result<HashSet<String>, sqlx::Error> {
    const COLUMNS: usize = 12;
    let mut saved = HashSet::new();
    for chunk in orders.chunks(64) {
        // Padded (see `Params`): a repeated source row changes nothing.
        // column1 id, column2 read version, column3 kitchen status, column4 kitchen
        // version, column5 cancellation, column6 refunded at, column7 status,
        // column8 reason, column9 timeline, column10 updated at, column11 version,
        // column12 history.
        // Integers are cast so PostgreSQL types the VALUES columns.
        let mut p = Params::new(conn);
        let rows: Vec<String> = (0..padded_len(chunk.len()))
            .map(|_| {
                let columns: Vec<String> = (0..COLUMNS)
                    .map(|c| if [1, 3, 5, 9, 10].contains(&c) { format!("CAST({} AS BIGINT)", p.value()) } else { p.value() })
                    .collect();
                format!("({})", columns.join(", "))
            })
            .collect();
        let sql = format!(
            "UPDATE orders SET kitchen_status = v.column3, kitchen_version = v.column4, cancellation = v.column5, \
             refunded_at = v.column6, status = v.column7, status_reason = v.column8, timeline = v.column9, \
             updated_at = v.column10, version = v.column11, history = v.column12 \
             FROM (VALUES {}) AS v WHERE orders.order_id = v.column1 AND orders.version = v.column2 RETURNING orders.order_id",
            rows.join(", ")
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for (o, read_version) in padded(chunk) {
            query = query
                .bind(o.id.as_str())
                .bind(*read_version)
                .bind(o.kitchen.map(|(s, _)| kitchen_text(s)))
                .bind(o.kitchen.map_or(0, |(_, v)| v))
                .bind(cancellation_text(o.cancellation))
                .bind(o.refunded_at.map(Timestamp::as_micros))
                .bind(status_name(o.status))
                .bind(&o.status_reason)
                .bind(timeline_json(&o.timeline)?)
                .bind(o.updated_at.as_micros())
                .bind(o.version)
                .bind(history_json(&o.history)?);
        }
        saved.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(saved)
}

fn timeline_json(timeline: &[StatusChange]) -> Result<String, sqlx::Error> {
    let json: Vec<ChangeJson> = timeline
        .iter()
        .map(|c| ChangeJson { status: status_name(c.status).to_owned(), at: c.occurred_at.as_micros(), note: c.note.clone() })
        .collect();
    serde_json::to_string(&json).map_err(|e| sqlx::Error::Encode(e.into()))
}

/// Every status, in the order of the enum.
const STATUSES: [OrderStatus; 8] = [
    OrderStatus::Placed,
    OrderStatus::Accepted,
    OrderStatus::Cooking,
    OrderStatus::Delivering,
    OrderStatus::Delivered,
    OrderStatus::CancellationRequested,
    OrderStatus::Cancelled,
    OrderStatus::Rejected,
];

/// The stored (and ErrorInfo) name of a status.
pub fn status_name(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Placed => "PLACED",
        OrderStatus::Accepted => "ACCEPTED",
        OrderStatus::Cooking => "COOKING",
        OrderStatus::Delivering => "DELIVERING",
        OrderStatus::Delivered => "DELIVERED",
        OrderStatus::CancellationRequested => "CANCELLATION_REQUESTED",
        OrderStatus::Cancelled => "CANCELLED",
        OrderStatus::Rejected => "REJECTED",
    }
}

fn status_from(text: &str) -> Result<OrderStatus, sqlx::Error> {
    Ok(match text {
        "PLACED" => OrderStatus::Placed,
        "ACCEPTED" => OrderStatus::Accepted,
        "COOKING" => OrderStatus::Cooking,
        "DELIVERING" => OrderStatus::Delivering,
        "DELIVERED" => OrderStatus::Delivered,
        "CANCELLATION_REQUESTED" => OrderStatus::CancellationRequested,
        "CANCELLED" => OrderStatus::Cancelled,
        "REJECTED" => OrderStatus::Rejected,
        _ => return Err(corrupt("status")),
    })
}

fn kitchen_text(status: KitchenStatus) -> &'static str {
    match status {
        KitchenStatus::Received => "RECEIVED",
        KitchenStatus::Cooking => "COOKING",
        KitchenStatus::Delivering => "DELIVERING",
        KitchenStatus::Delivered => "DELIVERED",
        KitchenStatus::Cancelled => "CANCELLED",
        KitchenStatus::Rejected => "REJECTED",
    }
}

fn kitchen_from(text: &str) -> Result<KitchenStatus, sqlx::Error> {
    Ok(match text {
        "RECEIVED" => KitchenStatus::Received,
        "COOKING" => KitchenStatus::Cooking,
        "DELIVERING" => KitchenStatus::Delivering,
        "DELIVERED" => KitchenStatus::Delivered,
        "CANCELLED" => KitchenStatus::Cancelled,
        "REJECTED" => KitchenStatus::Rejected,
        _ => return Err(corrupt("kitchen status")),
    })
}

fn cancellation_text(c: Cancellation) -> &'static str {
    match c {
        Cancellation::None => "NONE",
        Cancellation::Requested => "REQUESTED",
        Cancellation::Refused => "REFUSED",
    }
}

fn order_row(row: &AnyRow) -> Result<Order, sqlx::Error> {
    let currency: String = row.try_get("currency")?;
    let lines: Vec<LineJson> = serde_json::from_str(row.try_get("lines")?).map_err(|_| corrupt("lines"))?;
    let timeline: Vec<ChangeJson> = serde_json::from_str(row.try_get("timeline")?).map_err(|_| corrupt("timeline"))?;
    let kitchen = match row.try_get::<Option<String>, _>("kitchen_status")?.as_deref() {
        None => None,
        Some(text) => Some((kitchen_from(text)?, row.try_get("kitchen_version")?)),
    };
    let cancellation = match row.try_get::<&str, _>("cancellation")? {
        "NONE" => Cancellation::None,
        "REQUESTED" => Cancellation::Requested,
        "REFUSED" => Cancellation::Refused,
        _ => return Err(corrupt("cancellation")),
    };
    let mut order = Order {
        id: OrderId::from_existing(row.try_get::<String, _>("order_id")?),
        customer_id: row.try_get("customer_id")?,
        store_id: row.try_get("store_id")?,
        store_name: row.try_get("store_name")?,
        lines: lines_from_json(lines, &currency)?,
        total: money(&currency, row.try_get("total_minor")?)?,
        delivery_address: row.try_get("delivery_address")?,
        payment_id: row.try_get("payment_id")?,
        placed_at: Timestamp::from_micros(row.try_get("placed_at")?),
        kitchen,
        cancellation,
        refunded_at: row.try_get::<Option<i64>, _>("refunded_at")?.map(Timestamp::from_micros),
        status: status_from(row.try_get("status")?)?,
        status_reason: row.try_get("status_reason")?,
        timeline: timeline
            .into_iter()
            .map(|c| {
                Ok(StatusChange { status: status_from(&c.status)?, occurred_at: Timestamp::from_micros(c.at), note: c.note })
            })
            .collect::<Result<_, sqlx::Error>>()?,
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
        version: row.try_get("version")?,
        history: Vec::new(),
    };
    let history: &str = row.try_get("history")?;
    order.history = if history.is_empty() { legacy_history(&order) } else { history_from_json(history)? };
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_list_holds_every_status_once_under_its_stored_name() {
        let names: HashSet<&str> = STATUSES.iter().map(|s| status_name(*s)).collect();
        assert_eq!(names.len(), STATUSES.len());
        for status in STATUSES {
            assert_eq!(status_from(status_name(status)).expect("a stored name"), status);
        }
    }
}
