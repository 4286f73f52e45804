//! Every SQL statement of the store service.

use foodmesh_platform::{
    db::{Migrations, Params, batches, padded},
    money::{Currency, Money},
    paging::Cursor,
    time::Timestamp,
};
use serde::{Deserialize, Serialize};
use sqlx::{
    Any, AnyConnection, Executor, Row,
    any::{AnyArguments, AnyRow},
    query::Query,
};

use crate::domain::{
    catalog::{Catalog, MenuItem, Store},
    kitchen::{Line, Status, StoreOrder},
    review::{PreferredStore, Rating, RatingSummary, Review, ReviewDraft},
};

/// The store service's migrations.
pub fn migrations() -> Migrations {
    Migrations { sqlite: sqlx::migrate!("migrations/sqlite"), postgres: sqlx::migrate!("migrations/postgres") }
}

fn corrupt(what: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("store row has an invalid {what}").into())
}

// ---- catalog ----------------------------------------------------------------

/// The stored version and content hash of a store's catalog.
pub async fn catalog_version<'c>(
    db: impl Executor<'c, Database = Any>,
    store_id: &str,
) -> Result<Option<(i64, String)>, sqlx::Error> {
    let row = sqlx::query("SELECT catalog_version, catalog_hash FROM stores WHERE store_id = $1")
        .bind(store_id)
        .fetch_optional(db)
        .await?;
    row.map(|r| Ok((r.try_get("catalog_version")?, r.try_get("catalog_hash")?))).transpose()
}

/// Replaces a store and its menu with `catalog`.
pub async fn save_catalog(conn: &mut AnyConnection, catalog: &Catalog) -> Result<(), sqlx::Error> {
    let s = &catalog.store;
    sqlx::query(
        "INSERT INTO stores (store_id, name, cuisine, address, catalog_version, catalog_hash) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (store_id) DO UPDATE SET name = $2, cuisine = $3, address = $4, catalog_version = $5, catalog_hash = $6",
    )
    .bind(&s.store_id)
    .bind(&s.name)
    .bind(&s.cuisine)
    .bind(&s.address)
    .bind(catalog.version)
    .bind(catalog.content_hash())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM menu_items WHERE store_id = $1").bind(&s.store_id).execute(&mut *conn).await?;
    for (position, item) in catalog.items.iter().enumerate() {
        sqlx::query(
            "INSERT INTO menu_items (store_id, menu_item_id, position, name, description, currency, price_minor) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&s.store_id)
        .bind(&item.menu_item_id)
        .bind(i64::try_from(position).unwrap_or(i64::MAX))
        .bind(&item.name)
        .bind(&item.description)
        .bind(item.price.currency().code())
        .bind(item.price.amount_minor())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Stores ordered by id, after `after` (exclusive), at most `limit`.
pub async fn stores<'c>(
    db: impl Executor<'c, Database = Any>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Store>, sqlx::Error> {
    sqlx::query("SELECT store_id, name, cuisine, address FROM stores WHERE store_id > $1 ORDER BY store_id LIMIT $2")
        .bind(after.unwrap_or(""))
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(store)
        .collect()
}

/// A store's whole catalog.
pub async fn catalog(conn: &mut AnyConnection, store_id: &str) -> Result<Option<Catalog>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT store_id, name, cuisine, address, catalog_version FROM stores WHERE store_id = $1")
        .bind(store_id)
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let items = sqlx::query(
        "SELECT menu_item_id, name, description, currency, price_minor FROM menu_items WHERE store_id = $1 ORDER BY position",
    )
    .bind(store_id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| {
        let currency = Currency::parse(r.try_get("currency")?).map_err(|_| corrupt("currency"))?;
        Ok(MenuItem {
            menu_item_id: r.try_get("menu_item_id")?,
            name: r.try_get("name")?,
            description: r.try_get("description")?,
            price: Money::new(currency, r.try_get("price_minor")?).map_err(|_| corrupt("price"))?,
        })
    })
    .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(Catalog { store: store(&row)?, items, version: row.try_get("catalog_version")? }))
}

fn store(row: &AnyRow) -> Result<Store, sqlx::Error> {
    Ok(Store {
        store_id: row.try_get("store_id")?,
        name: row.try_get("name")?,
        cuisine: row.try_get("cuisine")?,
        address: row.try_get("address")?,
    })
}

// ---- pages, newest first ----------------------------------------------------

/// The condition of a page newest first by (`time`, `id`) after a cursor:
/// ` AND (time < ? OR (time = ? AND id < ?))`, its values bound by [`bind_cursor`].
fn before_cursor(p: &mut Params, time: &str, id: &str) -> String {
    let (a, b, c) = (p.value(), p.value(), p.value());
    format!(" AND ({time} < {a} OR ({time} = {b} AND {id} < {c}))")
}

/// Binds the values of [`before_cursor`]'s condition, if there is a cursor.
fn bind_cursor<'q>(query: Query<'q, Any, AnyArguments>, after: Option<&'q Cursor>) -> Query<'q, Any, AnyArguments> {
    match after {
        Some(cursor) => query.bind(cursor.key).bind(cursor.key).bind(cursor.id.as_str()),
        None => query,
    }
}

// ---- orders -----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
struct LineJson {
    id: String,
    name: String,
    qty: u32,
}

/// `SELECT` of every store order column with a condition, as a static string.
macro_rules! select_orders_where {
    ($condition:literal) => {
        concat!(
            "SELECT order_id, store_id, customer_id, lines, currency, total_minor, delivery_address, status, version, ",
            "reason, received_at, updated_at FROM store_orders WHERE ",
            $condition
        )
    };
}

/// An order by id.
pub async fn order<'c>(db: impl Executor<'c, Database = Any>, order_id: &str) -> Result<Option<StoreOrder>, sqlx::Error> {
    sqlx::query(select_orders_where!("order_id = $1"))
        .bind(order_id)
        .fetch_optional(db)
        .await?
        .map(|r| store_order(&r))
        .transpose()
}

/// The orders among `order_ids` that exist.
pub async fn orders_by_ids(conn: &mut AnyConnection, order_ids: &[&str]) -> Result<Vec<StoreOrder>, sqlx::Error> {
    if order_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("{}({})", select_orders_where!("order_id IN "), Params::new(conn).in_list(order_ids.len()));
    // The statement holds only placeholders; every id is bound.
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in padded(order_ids) {
        query = query.bind(*id);
    }
    query.fetch_all(conn).await?.iter().map(store_order).collect()
}

/// A page of a store's orders, newest first, optionally only some states.
pub async fn orders_of_store(
    conn: &mut AnyConnection,
    store_id: &str,
    statuses: &[Status],
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<StoreOrder>, sqlx::Error> {
    let mut p = Params::new(conn);
    let mut sql = format!("{}{}", select_orders_where!("store_id = "), p.value());
    if after.is_some() {
        sql.push_str(&before_cursor(&mut p, "received_at", "order_id"));
    }
    if !statuses.is_empty() {
        sql.push_str(&format!(" AND status IN ({})", p.list(statuses.len())));
    }
    sql.push_str(&format!(" ORDER BY received_at DESC, order_id DESC LIMIT {}", p.value()));
    // The statement holds only placeholders; every value is bound.
    let mut query = bind_cursor(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id), after);
    for status in statuses {
        query = query.bind(status_text(*status));
    }
    query.bind(limit).fetch_all(conn).await?.iter().map(store_order).collect()
}

/// Stores new orders, each with when the auto-kitchen moves it next, a
/// statement per [`batches`].
pub async fn insert_orders(conn: &mut AnyConnection, orders: &[(&StoreOrder, Option<Timestamp>)]) -> Result<(), sqlx::Error> {
    const COLUMNS: usize = 13;
    for chunk in batches(orders, 64) {
        let sql = format!(
            "INSERT INTO store_orders (order_id, store_id, customer_id, lines, currency, total_minor, delivery_address, \
             status, version, reason, received_at, updated_at, auto_next_at) VALUES {}",
            Params::new(conn).rows(chunk.len(), COLUMNS)
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (o, auto_next_at) in chunk {
            query = query
                .bind(&o.order_id)
                .bind(&o.store_id)
                .bind(&o.customer_id)
                .bind(lines_json(&o.lines))
                .bind(o.total.map_or_else(String::new, |t| t.currency().code().to_owned()))
                .bind(o.total.map_or(0, |t| t.amount_minor()))
                .bind(&o.delivery_address)
                .bind(status_text(o.status))
                .bind(o.version)
                .bind(&o.reason)
                .bind(o.received_at.as_micros())
                .bind(o.updated_at.as_micros())
                .bind(auto_next_at.map(Timestamp::as_micros));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Saves a changed order if nobody changed it since `expected_version` was
/// read. Returns false when another writer got there first.
pub async fn update_order(
    conn: &mut AnyConnection,
    o: &StoreOrder,
    expected_version: i64,
    auto_next_at: Option<Timestamp>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE store_orders SET lines = $3, currency = $4, total_minor = $5, delivery_address = $6, status = $7, \
         version = $8, reason = $9, updated_at = $10, auto_next_at = $11 WHERE order_id = $1 AND version = $2",
    )
    .bind(&o.order_id)
    .bind(expected_version)
    .bind(lines_json(&o.lines))
    .bind(o.total.map_or_else(String::new, |t| t.currency().code().to_owned()))
    .bind(o.total.map_or(0, |t| t.amount_minor()))
    .bind(&o.delivery_address)
    .bind(status_text(o.status))
    .bind(o.version)
    .bind(&o.reason)
    .bind(o.updated_at.as_micros())
    .bind(auto_next_at.map(Timestamp::as_micros))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One order's new kitchen state, to save if it is still at `read_version`.
#[derive(Debug)]
pub struct Step<'a> {
    /// The order after the change.
    pub order: &'a StoreOrder,
    /// The version it was read at.
    pub read_version: i64,
    /// When the auto-kitchen moves it next.
    pub auto_next_at: Option<Timestamp>,
}

/// Saves the new state of many orders, a statement per 64 orders, each only if nobody
/// changed it since it was read. Returns the ids saved.
pub async fn save_steps(
    conn: &mut AnyConnection,
    steps: &[Step<'_>],
    now: Timestamp,
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut saved = std::collections::HashSet::new();
    for chunk in steps.chunks(64) {
        // Padded (see `Params`): a repeated arm or key changes nothing.
        let chunk: Vec<&Step<'_>> = padded(chunk).collect();
        // Values are bound in the order their placeholders appear: the three
        // CASE lists (id, value), the time, then the (id, read version) keys.
        let mut p = Params::new(conn);
        let mut case = |cast: bool| {
            let arms: Vec<String> = chunk
                .iter()
                .map(|_| {
                    let (id, value) = (p.value(), p.value());
                    if cast { format!("WHEN {id} THEN CAST({value} AS BIGINT)") } else { format!("WHEN {id} THEN {value}") }
                })
                .collect();
            format!("CASE order_id {} END", arms.join(" "))
        };
        let (status, version, next) = (case(false), case(true), case(true));
        let updated_at = p.value();
        let keys: Vec<String> = chunk.iter().map(|_| format!("({}, CAST({} AS BIGINT))", p.value(), p.value())).collect();
        let sql = format!(
            "UPDATE store_orders SET status = {status}, version = {version}, auto_next_at = {next}, updated_at = {updated_at} \
             WHERE (order_id, version) IN (VALUES {}) RETURNING order_id",
            keys.join(", ")
        );
        // The statement holds only placeholders; every value is bound.
        let mut query = sqlx::query_scalar(sqlx::AssertSqlSafe(sql));
        for step in &chunk {
            query = query.bind(step.order.order_id.as_str()).bind(status_text(step.order.status));
        }
        for step in &chunk {
            query = query.bind(step.order.order_id.as_str()).bind(step.order.version);
        }
        for step in &chunk {
            query = query.bind(step.order.order_id.as_str()).bind(step.auto_next_at.map(Timestamp::as_micros));
        }
        query = query.bind(now.as_micros());
        for step in &chunk {
            query = query.bind(step.order.order_id.as_str()).bind(step.read_version);
        }
        saved.extend(query.fetch_all(&mut *conn).await?);
    }
    Ok(saved)
}

/// Orders the auto-kitchen should move on by `now`, oldest due first.
pub async fn due_orders<'c>(
    db: impl Executor<'c, Database = Any>,
    now: Timestamp,
    limit: i64,
) -> Result<Vec<StoreOrder>, sqlx::Error> {
    sqlx::query(select_orders_where!("auto_next_at <= $1 ORDER BY auto_next_at LIMIT $2"))
        .bind(now.as_micros())
        .bind(limit)
        .fetch_all(db)
        .await?
        .iter()
        .map(store_order)
        .collect()
}

fn lines_json(lines: &[Line]) -> String {
    let json: Vec<LineJson> =
        lines.iter().map(|l| LineJson { id: l.menu_item_id.clone(), name: l.name.clone(), qty: l.quantity }).collect();
    serde_json::to_string(&json).unwrap_or_else(|_| "[]".to_owned())
}

/// The stored name of a status.
pub fn status_text(status: Status) -> &'static str {
    match status {
        Status::Received => "RECEIVED",
        Status::Cooking => "COOKING",
        Status::Delivering => "DELIVERING",
        Status::Delivered => "DELIVERED",
        Status::Cancelled => "CANCELLED",
        Status::Rejected => "REJECTED",
    }
}

fn store_order(row: &AnyRow) -> Result<StoreOrder, sqlx::Error> {
    let lines: Vec<LineJson> = serde_json::from_str(row.try_get("lines")?).map_err(|_| corrupt("lines"))?;
    let currency: &str = row.try_get("currency")?;
    let total = if currency.is_empty() {
        None
    } else {
        let currency = Currency::parse(currency).map_err(|_| corrupt("currency"))?;
        Some(Money::new(currency, row.try_get("total_minor")?).map_err(|_| corrupt("total"))?)
    };
    let status = match row.try_get::<&str, _>("status")? {
        "RECEIVED" => Status::Received,
        "COOKING" => Status::Cooking,
        "DELIVERING" => Status::Delivering,
        "DELIVERED" => Status::Delivered,
        "CANCELLED" => Status::Cancelled,
        "REJECTED" => Status::Rejected,
        _ => return Err(corrupt("status")),
    };
    Ok(StoreOrder {
        order_id: row.try_get("order_id")?,
        store_id: row.try_get("store_id")?,
        customer_id: row.try_get("customer_id")?,
        lines: lines.into_iter().map(|l| Line { menu_item_id: l.id, name: l.name, quantity: l.qty }).collect(),
        total,
        delivery_address: row.try_get("delivery_address")?,
        status,
        version: row.try_get("version")?,
        reason: row.try_get("reason")?,
        received_at: Timestamp::from_micros(row.try_get("received_at")?),
        updated_at: Timestamp::from_micros(row.try_get("updated_at")?),
    })
}

// ---- reviews ----------------------------------------------------------------

const REVIEW_COLUMNS: &str = "review_id, order_id, store_id, customer_id, rating, comment, request_id, posted_at";

/// The review of an order, if it has one.
pub async fn review_of_order<'c>(db: impl Executor<'c, Database = Any>, order_id: &str) -> Result<Option<Review>, sqlx::Error> {
    let sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE order_id = $1");
    // The statement holds only a constant column list and a placeholder.
    sqlx::query(sqlx::AssertSqlSafe(sql)).bind(order_id).fetch_optional(db).await?.map(|r| review(&r)).transpose()
}

/// Stores a new review. Returns false, storing nothing, when the order
/// already has one (a concurrent post won).
pub async fn insert_review(conn: &mut AnyConnection, r: &Review) -> Result<bool, sqlx::Error> {
    let sql = format!(
        "INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (order_id) DO NOTHING"
    );
    // The statement holds only a constant column list and placeholders.
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&r.review_id)
        .bind(&r.order_id)
        .bind(&r.store_id)
        .bind(&r.customer_id)
        .bind(i64::from(r.draft.rating.stars()))
        .bind(&r.draft.comment)
        .bind(&r.request_id)
        .bind(r.posted_at.as_micros())
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A page of a store's reviews, newest first.
pub async fn reviews_of_store(
    conn: &mut AnyConnection,
    store_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<Review>, sqlx::Error> {
    let mut p = Params::new(conn);
    let mut sql = format!("SELECT {REVIEW_COLUMNS} FROM reviews WHERE store_id = {}", p.value());
    if after.is_some() {
        sql.push_str(&before_cursor(&mut p, "posted_at", "review_id"));
    }
    sql.push_str(&format!(" ORDER BY posted_at DESC, review_id DESC LIMIT {}", p.value()));
    // The statement holds only placeholders; every value is bound.
    let query = bind_cursor(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(store_id), after);
    query.bind(limit).fetch_all(conn).await?.iter().map(review).collect()
}

/// How many reviews a store has and their stars in all.
pub async fn rating_summary(conn: &mut AnyConnection, store_id: &str) -> Result<RatingSummary, sqlx::Error> {
    // CAST: PostgreSQL's SUM of BIGINT is NUMERIC, which `Any` cannot decode.
    let row = sqlx::query(
        "SELECT COUNT(*) AS count, CAST(COALESCE(SUM(rating), 0) AS BIGINT) AS stars FROM reviews WHERE store_id = $1",
    )
    .bind(store_id)
    .fetch_one(conn)
    .await?;
    Ok(RatingSummary { count: row.try_get("count")?, stars: row.try_get("stars")? })
}

fn review(row: &AnyRow) -> Result<Review, sqlx::Error> {
    let rating = Rating::parse(row.try_get("rating")?).ok_or_else(|| corrupt("rating"))?;
    Ok(Review {
        review_id: row.try_get("review_id")?,
        order_id: row.try_get("order_id")?,
        store_id: row.try_get("store_id")?,
        customer_id: row.try_get("customer_id")?,
        draft: ReviewDraft { rating, comment: row.try_get("comment")? },
        request_id: row.try_get("request_id")?,
        posted_at: Timestamp::from_micros(row.try_get("posted_at")?),
    })
}

// ---- preferred stores ---------------------------------------------------------

/// Registers `store_id` as one of the customer's preferred stores, unless it
/// already is; then returns the registration as stored.
pub async fn add_preferred_store(
    conn: &mut AnyConnection,
    customer_id: &str,
    store_id: &str,
    now: Timestamp,
) -> Result<PreferredStore, sqlx::Error> {
    sqlx::query(
        "INSERT INTO preferred_stores (customer_id, store_id, added_at) VALUES ($1, $2, $3) \
         ON CONFLICT (customer_id, store_id) DO NOTHING",
    )
    .bind(customer_id)
    .bind(store_id)
    .bind(now.as_micros())
    .execute(&mut *conn)
    .await?;
    let row = sqlx::query(
        "SELECT s.store_id, s.name, s.cuisine, s.address, p.added_at FROM preferred_stores p \
         JOIN stores s ON s.store_id = p.store_id WHERE p.customer_id = $1 AND p.store_id = $2",
    )
    .bind(customer_id)
    .bind(store_id)
    .fetch_one(conn)
    .await?;
    preferred_store(&row)
}

/// Removes `store_id` from the customer's preferred stores. Returns whether it was there.
pub async fn remove_preferred_store(conn: &mut AnyConnection, customer_id: &str, store_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM preferred_stores WHERE customer_id = $1 AND store_id = $2")
        .bind(customer_id)
        .bind(store_id)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A page of a customer's preferred stores, the most recently added first.
pub async fn preferred_stores(
    conn: &mut AnyConnection,
    customer_id: &str,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<PreferredStore>, sqlx::Error> {
    let mut p = Params::new(conn);
    let mut sql = format!(
        "SELECT s.store_id, s.name, s.cuisine, s.address, p.added_at FROM preferred_stores p \
         JOIN stores s ON s.store_id = p.store_id WHERE p.customer_id = {}",
        p.value()
    );
    if after.is_some() {
        sql.push_str(&before_cursor(&mut p, "p.added_at", "p.store_id"));
    }
    sql.push_str(&format!(" ORDER BY p.added_at DESC, p.store_id DESC LIMIT {}", p.value()));
    // The statement holds only placeholders; every value is bound.
    let query = bind_cursor(sqlx::query(sqlx::AssertSqlSafe(sql)).bind(customer_id), after);
    query.bind(limit).fetch_all(conn).await?.iter().map(preferred_store).collect()
}

fn preferred_store(row: &AnyRow) -> Result<PreferredStore, sqlx::Error> {
    Ok(PreferredStore { store: store(row)?, added_at: Timestamp::from_micros(row.try_get("added_at")?) })
}
