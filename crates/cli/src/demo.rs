//! `foodmesh demo`: a few customers order at once against the running mesh
//! (auto-kitchen on); one cancels at once, one's card is declined, two review
//! the store once their order is delivered. Each order's journey is printed
//! as it happens, from WatchOrder.

use std::time::{Duration, Instant};

use anyhow::Result;
use foodmesh_platform::grpc::authed;
use foodmesh_proto::{
    order::v1::{CancelOrderRequest, Order, OrderStatus, PaymentState, WatchOrderRequest},
    store::v1::PostReviewRequest,
};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;

use crate::{commands::Mesh, home::Home, show};

struct Plan {
    customer: &'static str,
    store: &'static str,
    items: &'static [(&'static str, i32)],
    card: &'static str,
    cancel: bool,
    /// Stars and words, posted once the order is delivered.
    review: Option<(i32, &'static str)>,
}

const PLANS: [Plan; 4] = [
    Plan {
        customer: "alice",
        store: "seoul-bbq",
        items: &[("bulgogi", 2), ("bibimbap", 1)],
        card: "tok_visa",
        cancel: false,
        review: Some((5, "Smoky and tender")),
    },
    Plan {
        customer: "bob",
        store: "pizza-napoli",
        items: &[("margherita", 1), ("tiramisu", 2)],
        card: "tok_visa",
        cancel: false,
        review: Some((4, "Good crust, a little late")),
    },
    Plan { customer: "carol", store: "green-bowl", items: &[("salmon-poke", 1)], card: "tok_visa", cancel: true, review: None },
    Plan { customer: "dave", store: "seoul-bbq", items: &[("galbi", 1)], card: "tok_decline", cancel: false, review: None },
];

fn say(start: Instant, who: &str, order: &str, what: &str) {
    let short = order.get(order.len().saturating_sub(6)..).unwrap_or(order);
    println!("+{:>7.3}s  {:<6} order …{:<6}  {}", start.elapsed().as_secs_f64(), who, short, what);
}

/// Runs the demo and returns once every order is final.
pub async fn run(home: &Home) -> Result<()> {
    let mesh = Mesh::connect(home)?;
    println!(
        "demo: 4 customers order at once (auto-kitchen on); carol cancels at once, dave's card is declined; \
         alice and bob review the store once delivered"
    );
    let start = Instant::now();
    let journeys = PLANS.iter().map(|plan| journey(mesh.clone(), plan, start));
    for result in futures::future::join_all(journeys).await {
        result?;
    }
    println!("demo: done in {:.1}s. Try: foodmesh notifications --customer alice", start.elapsed().as_secs_f64());
    Ok(())
}

async fn journey(mut mesh: Mesh, plan: &Plan, start: Instant) -> Result<()> {
    let token = mesh.customer(plan.customer)?;
    let request = crate::load::place_request(&uuid::Uuid::new_v4().to_string(), plan.store, plan.items, plan.card);
    // Right after `up`, the order service may still be receiving the menus.
    let order = loop {
        match mesh.order.place_order(authed(request.clone(), &token)).await {
            Ok(reply) => break reply.into_inner().order.unwrap_or_default(),
            Err(status) if retryable(&status) && start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(status) => {
                let reason = status.get_details_error_info().map(|i| i.reason).unwrap_or_default();
                say(start, plan.customer, "------", &format!("NOT PLACED  {:?} {reason}: {}", status.code(), status.message()));
                return Ok(());
            }
        }
    };
    say(
        start,
        plan.customer,
        &order.order_id,
        &format!("PLACED      {}, paid {}", order.store_name, show::money(order.total.as_ref())),
    );
    if plan.cancel {
        let cancel = CancelOrderRequest {
            order_id: order.order_id.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            reason: "changed my mind".into(),
        };
        match mesh.order.cancel_order(authed(cancel, &token)).await {
            Ok(_) => say(start, plan.customer, &order.order_id, "cancel requested and confirmed by the store"),
            Err(status) => say(start, plan.customer, &order.order_id, &format!("cancel refused: {}", status.message())),
        }
    }
    let mut stream =
        mesh.order.watch_order(authed(WatchOrderRequest { order_id: order.order_id.clone() }, &token)).await?.into_inner();
    let (mut seen, mut refunded, mut delivered) = (1, false, false);
    while let Some(update) = stream.next().await {
        let order: Order = update?.order.unwrap_or_default();
        delivered = order.status() == OrderStatus::Delivered;
        for change in order.timeline.iter().skip(seen) {
            say(start, plan.customer, &order.order_id, &format!("{:<11} {}", show::status(change.status()), change.note));
        }
        seen = seen.max(order.timeline.len());
        if !refunded && order.payment.as_ref().is_some_and(|p| p.state() == PaymentState::Refunded) {
            refunded = true;
            say(start, plan.customer, &order.order_id, &format!("REFUNDED    {}", show::money(order.total.as_ref())));
        }
    }
    if let (true, Some((rating, comment))) = (delivered, plan.review) {
        let request = PostReviewRequest {
            order_id: order.order_id.clone(),
            request_id: uuid::Uuid::new_v4().to_string(),
            rating,
            comment: comment.to_owned(),
        };
        let review = mesh.store.post_review(authed(request, &token)).await?.into_inner().review.unwrap_or_default();
        say(start, plan.customer, &order.order_id, &format!("REVIEWED    {} {}", show::stars(review.rating), review.comment));
    }
    Ok(())
}

fn retryable(status: &tonic::Status) -> bool {
    let unknown_store =
        status.get_details_bad_request().is_some_and(|b| b.field_violations.iter().any(|v| v.field == "store_id"));
    status.code() == Code::Unavailable || unknown_store
}
