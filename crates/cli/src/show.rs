//! How the command line prints foodmesh objects.

use foodmesh_proto::{
    common::v1::Money,
    notification::v1::Notification,
    order::v1::{Order, OrderStatus, PaymentState},
    store::v1::{Review, StoreOrder},
};

/// `18000 KRW`.
pub fn money(m: Option<&Money>) -> String {
    m.map_or_else(|| "-".to_owned(), |m| format!("{} {}", m.amount_minor, m.currency_code))
}

/// `COOKING` rather than `OrderStatus::Cooking`.
pub fn status(s: OrderStatus) -> &'static str {
    s.as_str_name().trim_start_matches("ORDER_STATUS_")
}

/// A time as `HH:MM:SS.mmm` UTC.
pub fn time(ts: Option<&prost_types::Timestamp>) -> String {
    let Some(ts) = ts else { return "-".to_owned() };
    let secs = ts.seconds.rem_euclid(86_400);
    format!("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60, ts.nanos / 1_000_000)
}

/// An order, several lines.
pub fn order(o: &Order) -> String {
    let mut out = format!("order {}  {}  {}  total {}\n", o.order_id, o.store_name, status(o.status()), money(o.total.as_ref()));
    for line in &o.lines {
        out.push_str(&format!("  {} x {:<20} {}\n", line.quantity, line.name, money(line.line_total.as_ref())));
    }
    if let Some(p) = &o.payment {
        let state = if p.state() == PaymentState::Refunded { "refunded" } else { "captured" };
        out.push_str(&format!("  payment {} {state}\n", p.payment_id));
    }
    for change in &o.timeline {
        out.push_str(&format!("  {}  {:<24} {}\n", time(change.occurred_at.as_ref()), status(change.status()), change.note));
    }
    out
}

/// A store order, one line.
pub fn store_order(o: &StoreOrder) -> String {
    let items: Vec<String> = o.lines.iter().map(|l| format!("{}x {}", l.quantity, l.name)).collect();
    format!(
        "{}  {:<10}  v{}  {}  {}",
        o.order_id,
        o.status().as_str_name().trim_start_matches("STORE_ORDER_STATUS_"),
        o.version,
        money(o.total.as_ref()),
        items.join(", ")
    )
}

/// A notification, one line.
pub fn notification(n: &Notification) -> String {
    format!(
        "{}  {:<8}  {:<32}  {}",
        time(n.occurred_at.as_ref()),
        n.delivery_status().as_str_name().trim_start_matches("DELIVERY_STATUS_"),
        n.title,
        n.body
    )
}

/// `★★★★☆` for 4 stars.
pub fn stars(rating: i32) -> String {
    let full = usize::try_from(rating.clamp(0, 5)).unwrap_or(0);
    format!("{}{}", "★".repeat(full), "☆".repeat(5 - full))
}

/// A review, one line: `★★★★☆  14:02:11.520  rev_…  Great bulgogi`.
pub fn review(r: &Review) -> String {
    format!("{}  {}  {}  {}\n", stars(r.rating), time(r.posted_at.as_ref()), r.review_id, r.comment)
}
