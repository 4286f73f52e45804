//! Domain types to and from their protobuf forms, shared by the gRPC and the
//! event adapters. Conversions destructure every field, so a new field in
//! either form fails to compile until it is handled here.

use foodmesh_platform::{convert, validation::Violations};
use foodmesh_proto::{order::v1 as order_pb, store::v1 as pb};

use crate::domain::{
    catalog::{Catalog, MenuItem, Store},
    kitchen::{CancellationRequest, Line, PlacedOrder, Status, StoreOrder},
    review::{PreferredStore, Review, ReviewDraft},
};

pub(crate) fn status(status: Status) -> pb::StoreOrderStatus {
    match status {
        Status::Received => pb::StoreOrderStatus::Received,
        Status::Cooking => pb::StoreOrderStatus::Cooking,
        Status::Delivering => pb::StoreOrderStatus::Delivering,
        Status::Delivered => pb::StoreOrderStatus::Delivered,
        Status::Cancelled => pb::StoreOrderStatus::Cancelled,
        Status::Rejected => pb::StoreOrderStatus::Rejected,
    }
}

pub(crate) fn from_status(status: pb::StoreOrderStatus) -> Option<Status> {
    match status {
        pb::StoreOrderStatus::Unspecified => None,
        pb::StoreOrderStatus::Received => Some(Status::Received),
        pb::StoreOrderStatus::Cooking => Some(Status::Cooking),
        pb::StoreOrderStatus::Delivering => Some(Status::Delivering),
        pb::StoreOrderStatus::Delivered => Some(Status::Delivered),
        pb::StoreOrderStatus::Cancelled => Some(Status::Cancelled),
        pb::StoreOrderStatus::Rejected => Some(Status::Rejected),
    }
}

pub(crate) fn store(s: &Store) -> pb::Store {
    let Store { store_id, name, cuisine, address } = s;
    pb::Store { store_id: store_id.clone(), name: name.clone(), cuisine: cuisine.clone(), address: address.clone() }
}

pub(crate) fn menu_item(i: &MenuItem) -> pb::MenuItem {
    let MenuItem { menu_item_id, name, description, price } = i;
    pb::MenuItem {
        menu_item_id: menu_item_id.clone(),
        name: name.clone(),
        description: description.clone(),
        price: Some(convert::money(*price)),
    }
}

pub(crate) fn catalog_items(c: &Catalog) -> Vec<pb::MenuItem> {
    c.items.iter().map(menu_item).collect()
}

pub(crate) fn store_order(o: &StoreOrder) -> pb::StoreOrder {
    let StoreOrder {
        order_id,
        store_id,
        customer_id,
        lines,
        total,
        delivery_address,
        status: s,
        version,
        reason,
        received_at,
        updated_at,
    } = o;
    pb::StoreOrder {
        order_id: order_id.clone(),
        store_id: store_id.clone(),
        customer_id: customer_id.clone(),
        lines: lines
            .iter()
            .map(|l| pb::StoreOrderLine {
                menu_item_id: l.menu_item_id.clone(),
                name: l.name.clone(),
                quantity: i32::try_from(l.quantity).unwrap_or(i32::MAX),
            })
            .collect(),
        total: total.map(convert::money),
        delivery_address: delivery_address.clone(),
        status: status(*s).into(),
        received_at: Some(convert::timestamp(*received_at)),
        updated_at: Some(convert::timestamp(*updated_at)),
        version: *version,
        reason: reason.clone(),
    }
}

/// An `OrderPlaced` event as the kitchen sees it; a malformed one is an error.
pub(crate) fn placed_order(e: order_pb::OrderPlaced) -> Result<PlacedOrder, Violations> {
    let order_pb::OrderPlaced { order_id, customer_id, store_id, lines, total, delivery_address, payment_id: _ } = e;
    let mut v = Violations::new();
    let total = convert::money_field(total.as_ref(), "total", &mut v);
    let lines = lines
        .into_iter()
        .map(|l| Line { menu_item_id: l.menu_item_id, name: l.name, quantity: u32::try_from(l.quantity).unwrap_or(0) })
        .collect();
    let total = v.clone().into_result(total)?.ok_or(v)?;
    Ok(PlacedOrder { order_id, store_id, customer_id, lines, total, delivery_address })
}

pub(crate) fn cancellation_request(e: order_pb::OrderCancellationRequested) -> CancellationRequest {
    let order_pb::OrderCancellationRequested { order_id, customer_id, store_id, reason } = e;
    CancellationRequest { order_id, store_id, customer_id, reason }
}

/// A review as any customer may read it: without its customer and order.
pub(crate) fn review(r: &Review) -> pb::Review {
    let Review { review_id, order_id: _, store_id, customer_id: _, draft, request_id: _, posted_at } = r;
    let ReviewDraft { rating, comment } = draft;
    pb::Review {
        review_id: review_id.clone(),
        store_id: store_id.clone(),
        rating: i32::from(rating.stars()),
        comment: comment.clone(),
        posted_at: Some(convert::timestamp(*posted_at)),
    }
}

/// The event announcing a review, with everything another context may need.
pub(crate) fn review_posted(r: &Review) -> pb::ReviewPosted {
    let Review { review_id, order_id, store_id, customer_id, draft, request_id: _, posted_at: _ } = r;
    let ReviewDraft { rating, comment } = draft;
    pb::ReviewPosted {
        review_id: review_id.clone(),
        order_id: order_id.clone(),
        store_id: store_id.clone(),
        customer_id: customer_id.clone(),
        rating: i32::from(rating.stars()),
        comment: comment.clone(),
    }
}

pub(crate) fn preferred_store(p: &PreferredStore) -> pb::PreferredStore {
    let PreferredStore { store: s, added_at } = p;
    pb::PreferredStore { store: Some(store(s)), added_at: Some(convert::timestamp(*added_at)) }
}
