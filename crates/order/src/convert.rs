//! Domain types to and from their protobuf forms, shared by the gRPC and the
//! event adapters. Conversions destructure every field, so a new field in
//! either form fails to compile until it is handled here.

use foodmesh_platform::{breaker::Phase, convert};
use foodmesh_proto::{order::v1 as pb, store::v1 as store_pb};

use crate::{
    app::PaymentLoad,
    domain::{
        order::{KitchenStatus, Order, OrderStatus, StatusChange},
        placing::PricedLine,
    },
};

pub(crate) fn status(status: OrderStatus) -> pb::OrderStatus {
    match status {
        OrderStatus::Placed => pb::OrderStatus::Placed,
        OrderStatus::Accepted => pb::OrderStatus::Accepted,
        OrderStatus::Cooking => pb::OrderStatus::Cooking,
        OrderStatus::Delivering => pb::OrderStatus::Delivering,
        OrderStatus::Delivered => pb::OrderStatus::Delivered,
        OrderStatus::CancellationRequested => pb::OrderStatus::CancellationRequested,
        OrderStatus::Cancelled => pb::OrderStatus::Cancelled,
        OrderStatus::Rejected => pb::OrderStatus::Rejected,
    }
}

pub(crate) fn kitchen_status(status: store_pb::StoreOrderStatus) -> Option<KitchenStatus> {
    match status {
        store_pb::StoreOrderStatus::Unspecified => None,
        store_pb::StoreOrderStatus::Received => Some(KitchenStatus::Received),
        store_pb::StoreOrderStatus::Cooking => Some(KitchenStatus::Cooking),
        store_pb::StoreOrderStatus::Delivering => Some(KitchenStatus::Delivering),
        store_pb::StoreOrderStatus::Delivered => Some(KitchenStatus::Delivered),
        store_pb::StoreOrderStatus::Cancelled => Some(KitchenStatus::Cancelled),
        store_pb::StoreOrderStatus::Rejected => Some(KitchenStatus::Rejected),
    }
}

pub(crate) fn line(l: &PricedLine) -> pb::OrderLine {
    let PricedLine { menu_item_id, name, quantity, unit_price, line_total } = l;
    pb::OrderLine {
        menu_item_id: menu_item_id.clone(),
        name: name.clone(),
        quantity: i32::try_from(*quantity).unwrap_or(i32::MAX),
        unit_price: Some(convert::money(*unit_price)),
        line_total: Some(convert::money(*line_total)),
    }
}

pub(crate) fn order(o: &Order) -> pb::Order {
    let Order {
        id,
        customer_id,
        store_id,
        store_name,
        lines,
        total,
        delivery_address,
        payment_id,
        placed_at,
        kitchen: _,
        cancellation: _,
        refunded_at,
        status: s,
        status_reason,
        timeline,
        updated_at,
        version: _,
        history: _,
    } = o;
    pb::Order {
        order_id: id.to_string(),
        customer_id: customer_id.clone(),
        store_id: store_id.clone(),
        store_name: store_name.clone(),
        lines: lines.iter().map(line).collect(),
        total: Some(convert::money(*total)),
        delivery_address: delivery_address.clone(),
        status: status(*s).into(),
        status_reason: status_reason.clone(),
        payment: Some(pb::PaymentSummary {
            payment_id: payment_id.clone(),
            state: if refunded_at.is_some() { pb::PaymentState::Refunded } else { pb::PaymentState::Captured }.into(),
            refunded_at: refunded_at.map(convert::timestamp),
        }),
        timeline: timeline
            .iter()
            .map(|StatusChange { status: s, occurred_at, note }| pb::StatusChange {
                status: status(*s).into(),
                occurred_at: Some(convert::timestamp(*occurred_at)),
                note: note.clone(),
            })
            .collect(),
        placed_at: Some(convert::timestamp(*placed_at)),
        updated_at: Some(convert::timestamp(*updated_at)),
    }
}

/// The payment gateway's load, for operators.
pub fn payment_circuit(load: &PaymentLoad) -> pb::GetPaymentCircuitResponse {
    let state = match load.breaker.phase {
        Phase::Closed => pb::CircuitState::Closed,
        Phase::Open => pb::CircuitState::Open,
        Phase::HalfOpen => pb::CircuitState::HalfOpen,
        Phase::Disabled => pb::CircuitState::Disabled,
    };
    let small = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    pb::GetPaymentCircuitResponse {
        state: state.into(),
        consecutive_failures: load.breaker.consecutive_failures,
        failure_threshold: load.settings.failure_threshold,
        cool_down_ms: u32::try_from(load.settings.cool_down.as_millis()).unwrap_or(u32::MAX),
        changed_at: load.breaker.changed_at.map(prost_types::Timestamp::from),
        charges_in_flight: small(load.in_flight),
        max_charges_in_flight: small(load.max_in_flight),
        opened_total: load.breaker.opened_total,
        rejected_open_total: load.breaker.rejected_total,
        rejected_shed_total: load.shed_total,
    }
}
