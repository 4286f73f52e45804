//! A new order: its id, its validation and its price.

use foodmesh_platform::{money::Money, validation::Violations};
use sha2::{Digest, Sha256};

/// The most lines an order may have.
pub const MAX_LINES: usize = 20;
/// The most portions of one item in an order.
pub const MAX_QUANTITY: u32 = 20;

/// An order id: `ord_` and a time-ordered UUID (v7) in hex. Time-ordered ids
/// keep every index on them append-only: a new order touches the last page
/// of each index instead of a random one. The request that created an order
/// is found by its customer and request id, not by the order id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OrderId(String);

impl OrderId {
    /// A new id, greater than every id generated before it in this process.
    pub fn generate() -> Self {
        Self(format!("ord_{}", uuid::Uuid::now_v7().simple()))
    }

    /// An existing id.
    pub fn from_existing(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for OrderId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One requested line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedLine {
    /// A menu item of the store.
    pub menu_item_id: String,
    /// How many portions.
    pub quantity: u32,
}

/// A customer's request for a new order, before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    /// The customer (from their token).
    pub customer_id: String,
    /// Their id for this request.
    pub request_id: String,
    /// The store.
    pub store_id: String,
    /// What they want.
    pub lines: Vec<RequestedLine>,
    /// Where to deliver.
    pub delivery_address: String,
    /// Their tokenised card.
    pub payment_token: String,
}

impl PlaceOrder {
    /// A digest of everything the customer asked for: a repeated request id
    /// must come with the same one.
    pub fn fingerprint(&self) -> String {
        let mut hash = Sha256::new();
        for part in [&self.store_id, &self.delivery_address, &self.payment_token] {
            hash.update(part.as_bytes());
            hash.update([0]);
        }
        for line in &self.lines {
            hash.update(line.menu_item_id.as_bytes());
            hash.update(line.quantity.to_le_bytes());
        }
        hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// A menu item in the order service's copy of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MenuEntry {
    /// Its id within the store.
    pub menu_item_id: String,
    /// Its name.
    pub name: String,
    /// Its price.
    pub price: Money,
}

/// A store's menu in the order service's copy of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Menu {
    /// The store.
    pub store_id: String,
    /// Its name.
    pub store_name: String,
    /// Its items.
    pub items: Vec<MenuEntry>,
}

/// A priced line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    /// The menu item.
    pub menu_item_id: String,
    /// Its name when ordered.
    pub name: String,
    /// How many.
    pub quantity: u32,
    /// The menu price of one.
    pub unit_price: Money,
    /// `unit_price` × `quantity`.
    pub line_total: Money,
}

/// An order priced from the menu, ready to be paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedOrder {
    /// The store.
    pub store_id: String,
    /// Its name.
    pub store_name: String,
    /// The lines.
    pub lines: Vec<PricedLine>,
    /// What to charge.
    pub total: Money,
    /// Where to deliver.
    pub delivery_address: String,
}

/// Where a PlaceOrder request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptState {
    /// Payment was asked; its answer is not known yet.
    Pending,
    /// Paid; the order exists.
    Placed,
    /// The card was declined; no order exists.
    Declined,
}

/// The record of a PlaceOrder request, written before payment is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// The order it creates.
    pub order_id: OrderId,
    /// The request's fingerprint.
    pub fingerprint: String,
    /// The order as priced at the first attempt.
    pub priced: PricedOrder,
    /// Where it stands.
    pub state: AttemptState,
    /// The payment, once placed.
    pub payment_id: String,
    /// Why the card was declined, if it was.
    pub decline_reason: String,
}

/// Checks the parts of a request that need no menu: every problem is
/// recorded, with the field it concerns.
pub fn check_request_shape(request: &PlaceOrder, v: &mut Violations) {
    v.check_request_id("request_id", &request.request_id);
    v.check_id("store_id", &request.store_id);
    v.check_text("delivery_address", &request.delivery_address, 1, 200);
    v.check_text("payment_token", &request.payment_token, 1, 64);
    if request.lines.is_empty() {
        v.add("lines", "must contain at least one line");
    } else if request.lines.len() > MAX_LINES {
        v.add("lines", format!("must contain at most {MAX_LINES} lines"));
    }
    for (i, line) in request.lines.iter().enumerate() {
        v.check_id(&format!("lines[{i}].menu_item_id"), &line.menu_item_id);
        if line.quantity == 0 || line.quantity > MAX_QUANTITY {
            v.add(format!("lines[{i}].quantity"), format!("must be 1 to {MAX_QUANTITY}"));
        }
        if request.lines[..i].iter().any(|earlier| earlier.menu_item_id == line.menu_item_id) {
            v.add(format!("lines[{i}].menu_item_id"), "appears more than once; raise the quantity instead");
        }
    }
}

/// Prices a request from the store's menu. `menu` is `None` for an unknown
/// store. Prices always come from the menu, never from the client.
pub fn price(request: &PlaceOrder, menu: Option<&Menu>) -> Result<PricedOrder, Violations> {
    let mut v = Violations::new();
    check_request_shape(request, &mut v);
    let Some(menu) = menu else {
        if !request.store_id.is_empty() {
            v.add("store_id", "is not a store that takes orders");
        }
        return Err(v);
    };
    let mut lines = Vec::with_capacity(request.lines.len());
    for (i, line) in request.lines.iter().enumerate() {
        match menu.items.iter().find(|item| item.menu_item_id == line.menu_item_id) {
            Some(item) => match item.price.checked_mul(line.quantity) {
                Ok(line_total) => lines.push(PricedLine {
                    menu_item_id: item.menu_item_id.clone(),
                    name: item.name.clone(),
                    quantity: line.quantity,
                    unit_price: item.price,
                    line_total,
                }),
                Err(err) => v.add(format!("lines[{i}].quantity"), err.to_string()),
            },
            None if !line.menu_item_id.is_empty() => {
                v.add(format!("lines[{i}].menu_item_id"), format!("is not on the menu of {}", menu.store_id));
            }
            None => {}
        }
    }
    let mut total = None;
    for line in &lines {
        let sum = match total {
            None => Ok(line.line_total),
            Some(sum) => line.line_total.checked_add(sum),
        };
        match sum {
            Ok(sum) => total = Some(sum),
            Err(err) => {
                v.add("lines", err.to_string());
                break;
            }
        }
    }
    let total = v.clone().into_result(total)?.ok_or(v)?;
    Ok(PricedOrder {
        store_id: menu.store_id.clone(),
        store_name: menu.store_name.clone(),
        lines,
        total,
        delivery_address: request.delivery_address.clone(),
    })
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::Currency;

    use super::*;

    fn krw(amount: i64) -> Money {
        Money::new(Currency::KRW, amount).expect("valid")
    }

    fn menu() -> Menu {
        Menu {
            store_id: "seoul-bbq".into(),
            store_name: "Seoul BBQ".into(),
            items: vec![
                MenuEntry { menu_item_id: "bulgogi".into(), name: "Bulgogi".into(), price: krw(18_000) },
                MenuEntry { menu_item_id: "bibimbap".into(), name: "Bibimbap".into(), price: krw(12_000) },
            ],
        }
    }

    fn request(lines: &[(&str, u32)]) -> PlaceOrder {
        PlaceOrder {
            customer_id: "alice".into(),
            request_id: "r-1".into(),
            store_id: "seoul-bbq".into(),
            lines: lines.iter().map(|(id, q)| RequestedLine { menu_item_id: (*id).into(), quantity: *q }).collect(),
            delivery_address: "1 Main St".into(),
            payment_token: "tok_visa".into(),
        }
    }

    fn fields(v: &Violations) -> Vec<&str> {
        v.iter().map(|x| x.field.as_str()).collect()
    }

    #[test]
    fn prices_come_from_the_menu_and_add_up() {
        let priced = price(&request(&[("bulgogi", 2), ("bibimbap", 1)]), Some(&menu())).expect("valid");
        assert_eq!(priced.lines[0].line_total, krw(36_000));
        assert_eq!(priced.total, krw(48_000));
        assert_eq!(priced.store_name, "Seoul BBQ");
    }

    #[test]
    fn every_bad_line_is_reported_with_its_index() {
        let err =
            price(&request(&[("bulgogi", 0), ("tofu", 1), ("bibimbap", 21), ("bulgogi", 1)]), Some(&menu())).expect_err("bad");
        assert_eq!(fields(&err), ["lines[0].quantity", "lines[2].quantity", "lines[3].menu_item_id", "lines[1].menu_item_id"]);
    }

    #[test]
    fn an_empty_order_and_an_unknown_store_are_both_reported() {
        let mut r = request(&[]);
        r.store_id = "nowhere".into();
        r.delivery_address = String::new();
        let err = price(&r, None).expect_err("bad");
        assert_eq!(fields(&err), ["delivery_address", "lines", "store_id"]);
    }

    #[test]
    fn too_many_lines_are_refused() {
        let ids: Vec<String> = (0..21).map(|i| format!("i{i}")).collect();
        let lines: Vec<(&str, u32)> = ids.iter().map(|s| (s.as_str(), 1)).collect();
        let err = price(&request(&lines), Some(&menu())).expect_err("bad");
        assert!(fields(&err).contains(&"lines"));
    }

    #[test]
    fn order_ids_grow_with_time_and_have_a_fixed_shape() {
        let ids: Vec<OrderId> = (0..100).map(|_| OrderId::generate()).collect();
        assert!(ids.windows(2).all(|w| w[0].as_str() < w[1].as_str()), "time-ordered");
        assert!(ids.iter().all(|id| id.as_str().starts_with("ord_") && id.as_str().len() == 36));
    }

    #[test]
    fn the_fingerprint_changes_with_what_was_asked() {
        let base = request(&[("bulgogi", 1)]);
        let mut more = base.clone();
        more.lines[0].quantity = 2;
        assert_eq!(base.fingerprint(), request(&[("bulgogi", 1)]).fingerprint());
        assert_ne!(base.fingerprint(), more.fingerprint());
    }
}
