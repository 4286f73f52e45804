//! Commands that act as a customer or as store staff against a running mesh.

use anyhow::{Context, Result};
use foodmesh_platform::{auth::Principal, grpc::authed};
use foodmesh_proto::{
    notification::v1::{
        ListNotificationsRequest, WatchNotificationsRequest, notification_service_client::NotificationServiceClient,
    },
    order::v1::{
        CancelOrderRequest, GetOrderRequest, ListOrdersRequest, PlaceOrderLine, PlaceOrderRequest, WatchOrderRequest,
        order_service_client::OrderServiceClient,
    },
    store::v1::{
        AddPreferredStoreRequest, CompleteDeliveryRequest, GetMenuRequest, ListPreferredStoresRequest, ListReviewsRequest,
        ListStoreOrdersRequest, ListStoresRequest, PostReviewRequest, RejectOrderRequest, RemovePreferredStoreRequest,
        StartCookingRequest, StartDeliveryRequest, store_service_client::StoreServiceClient,
    },
};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::{home::Home, show};

/// Clients of the running mesh, with tokens signed by its local key.
#[derive(Debug, Clone)]
pub struct Mesh {
    home: Home,
    /// order.
    pub order: OrderServiceClient<Channel>,
    /// store.
    pub store: StoreServiceClient<Channel>,
    /// notification.
    pub notification: NotificationServiceClient<Channel>,
}

fn channel(addr: &str) -> Result<Channel> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect_lazy())
}

impl Mesh {
    /// Clients of the mesh running from `home`.
    pub fn connect(home: &Home) -> Result<Self> {
        let endpoints = home.endpoints()?;
        Ok(Self {
            home: home.clone(),
            order: OrderServiceClient::new(channel(&endpoints.order)?),
            store: StoreServiceClient::new(channel(&endpoints.store)?),
            notification: NotificationServiceClient::new(channel(&endpoints.notification)?),
        })
    }

    /// A customer's `authorization` value.
    pub fn customer(&self, id: &str) -> Result<String> {
        self.home.bearer(&Principal::Customer { customer_id: id.to_owned() })
    }

    /// A store staff member's `authorization` value.
    pub fn staff(&self, store_id: &str) -> Result<String> {
        self.home.bearer(&Principal::StoreStaff { staff_id: format!("staff@{store_id}"), store_id: store_id.to_owned() })
    }
}

/// A staff action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StaffAction {
    /// List the store's orders.
    List,
    /// Start cooking an order.
    Cook,
    /// Hand an order to delivery.
    Deliver,
    /// Record a delivery.
    Complete,
    /// Refuse an order (with --reason).
    Reject,
}

/// What to do with a customer's preferred stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PreferredAction {
    /// List them, the most recently added first.
    List,
    /// Add a store.
    Add,
    /// Remove a store.
    Remove,
}

/// `foodmesh stores`.
pub async fn stores(mesh: &mut Mesh) -> Result<()> {
    let token = mesh.customer("browser")?;
    let stores =
        mesh.store.list_stores(authed(ListStoresRequest { page_size: 100, ..Default::default() }, &token)).await?.into_inner();
    for s in stores.stores {
        println!("{:<14} {:<18} {:<10} {}", s.store_id, s.name, s.cuisine, s.address);
    }
    Ok(())
}

/// `foodmesh menu STORE`.
pub async fn menu(mesh: &mut Mesh, store_id: &str) -> Result<()> {
    let token = mesh.customer("browser")?;
    let menu = mesh.store.get_menu(authed(GetMenuRequest { store_id: store_id.to_owned() }, &token)).await?.into_inner();
    if let Some(store) = menu.store {
        println!("{} ({})", store.name, store.cuisine);
    }
    for item in menu.items {
        println!("  {:<16} {:<20} {:>10}  {}", item.menu_item_id, item.name, show::money(item.price.as_ref()), item.description);
    }
    Ok(())
}

/// `foodmesh place`.
pub async fn place(
    mesh: &mut Mesh,
    customer: &str,
    store_id: &str,
    items: &[String],
    address: &str,
    card: &str,
    request_id: Option<String>,
) -> Result<()> {
    let lines = items
        .iter()
        .map(|item| {
            let (id, quantity) = item.split_once(':').unwrap_or((item, "1"));
            Ok(PlaceOrderLine {
                menu_item_id: id.to_owned(),
                quantity: quantity.parse().with_context(|| format!("bad quantity in {item:?}"))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let request = PlaceOrderRequest {
        request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        store_id: store_id.to_owned(),
        lines,
        delivery_address: address.to_owned(),
        payment_token: card.to_owned(),
    };
    let order = mesh.order.place_order(authed(request, &mesh.customer(customer)?)).await?.into_inner().order.unwrap_or_default();
    print!("{}", show::order(&order));
    Ok(())
}

/// `foodmesh get`.
pub async fn get(mesh: &mut Mesh, customer: &str, order_id: &str) -> Result<()> {
    let order =
        mesh.order.get_order(authed(GetOrderRequest { order_id: order_id.to_owned() }, &mesh.customer(customer)?)).await?;
    print!("{}", show::order(&order.into_inner().order.unwrap_or_default()));
    Ok(())
}

/// `foodmesh orders`.
pub async fn orders(mesh: &mut Mesh, customer: &str) -> Result<()> {
    let request = ListOrdersRequest { page_size: 100, ..Default::default() };
    for order in mesh.order.list_orders(authed(request, &mesh.customer(customer)?)).await?.into_inner().orders {
        println!(
            "{}  {:<18} {:<24} {}",
            order.order_id,
            order.store_name,
            show::status(order.status()),
            show::money(order.total.as_ref())
        );
    }
    Ok(())
}

/// `foodmesh cancel`.
pub async fn cancel(mesh: &mut Mesh, customer: &str, order_id: &str, reason: &str) -> Result<()> {
    let request = CancelOrderRequest {
        order_id: order_id.to_owned(),
        request_id: uuid::Uuid::new_v4().to_string(),
        reason: reason.to_owned(),
    };
    let order = mesh.order.cancel_order(authed(request, &mesh.customer(customer)?)).await?;
    print!("{}", show::order(&order.into_inner().order.unwrap_or_default()));
    Ok(())
}

/// `foodmesh watch`.
pub async fn watch(mesh: &mut Mesh, customer: &str, order_id: &str) -> Result<()> {
    let request = WatchOrderRequest { order_id: order_id.to_owned() };
    let mut stream = mesh.order.watch_order(authed(request, &mesh.customer(customer)?)).await?.into_inner();
    while let Some(update) = stream.next().await {
        let order = update?.order.unwrap_or_default();
        let last = order.timeline.last();
        println!(
            "{}  {}  {}",
            show::time(last.and_then(|c| c.occurred_at.as_ref())),
            show::status(order.status()),
            last.map_or("", |c| &c.note)
        );
    }
    Ok(())
}

/// `foodmesh kitchen`.
pub async fn kitchen(mesh: &mut Mesh, store_id: &str, action: StaffAction, order_id: Option<&str>, reason: &str) -> Result<()> {
    let token = mesh.staff(store_id)?;
    let order_id = || order_id.map(str::to_owned).context("this action needs an ORDER_ID");
    let request_id = uuid::Uuid::new_v4().to_string();
    let order = match action {
        StaffAction::List => {
            let request = ListStoreOrdersRequest { page_size: 100, ..Default::default() };
            for order in mesh.store.list_store_orders(authed(request, &token)).await?.into_inner().orders {
                println!("{}", show::store_order(&order));
            }
            return Ok(());
        }
        StaffAction::Cook => {
            mesh.store
                .start_cooking(authed(StartCookingRequest { order_id: order_id()?, request_id }, &token))
                .await?
                .into_inner()
                .order
        }
        StaffAction::Deliver => {
            mesh.store
                .start_delivery(authed(StartDeliveryRequest { order_id: order_id()?, request_id }, &token))
                .await?
                .into_inner()
                .order
        }
        StaffAction::Complete => {
            mesh.store
                .complete_delivery(authed(CompleteDeliveryRequest { order_id: order_id()?, request_id }, &token))
                .await?
                .into_inner()
                .order
        }
        StaffAction::Reject => {
            let request = RejectOrderRequest { order_id: order_id()?, request_id, reason: reason.to_owned() };
            mesh.store.reject_order(authed(request, &token)).await?.into_inner().order
        }
    };
    println!("{}", show::store_order(&order.unwrap_or_default()));
    Ok(())
}

/// `foodmesh notifications`.
pub async fn notifications(mesh: &mut Mesh, customer: &str, follow: bool) -> Result<()> {
    let token = mesh.customer(customer)?;
    if follow {
        let request = WatchNotificationsRequest { order_id: String::new(), include_existing: true };
        let mut stream = mesh.notification.watch_notifications(authed(request, &token)).await?.into_inner();
        while let Some(n) = stream.next().await {
            println!("{}", show::notification(&n?.notification.unwrap_or_default()));
        }
        return Ok(());
    }
    let request = ListNotificationsRequest { page_size: 100, ..Default::default() };
    let mut list = mesh.notification.list_notifications(authed(request, &token)).await?.into_inner().notifications;
    list.reverse();
    for n in list {
        println!("{}", show::notification(&n));
    }
    Ok(())
}

/// `foodmesh dead-letters`: list or replay what consumers parked.
pub async fn dead_letters(nats_url: &str, action: crate::DeadLetterAction) -> Result<()> {
    use foodmesh_platform::dead_letter;
    let client = async_nats::connect(nats_url)
        .await
        .with_context(|| format!("cannot reach NATS at {}", foodmesh_platform::messaging::display_url(nats_url)))?;
    let js = foodmesh_platform::messaging::jetstream(client);
    match action {
        crate::DeadLetterAction::List { consumer, limit } => {
            let parked = dead_letter::list(&js, consumer.as_deref(), limit).await?;
            if parked.is_empty() {
                println!("no parked messages");
            }
            for d in parked {
                println!(
                    "#{:<6} {}  {} -> {} (stream {} seq {}, {} deliveries)\n        event {}: {}",
                    d.sequence,
                    d.parked_at,
                    d.subject,
                    d.consumer,
                    d.stream,
                    d.original_sequence,
                    d.deliveries,
                    d.event_id,
                    d.reason
                );
            }
        }
        crate::DeadLetterAction::Replay { sequences, all, consumer } => {
            let sequences = if all {
                dead_letter::list(&js, consumer.as_deref(), usize::MAX).await?.into_iter().map(|d| d.sequence).collect()
            } else {
                sequences
            };
            for sequence in sequences {
                let d = dead_letter::replay(&js, sequence).await?;
                println!("#{sequence} replayed on {} (event {}, parked by {})", d.subject, d.event_id, d.consumer);
            }
        }
    }
    Ok(())
}

/// `foodmesh review`.
pub async fn review(
    mesh: &mut Mesh,
    customer: &str,
    order_id: &str,
    rating: i32,
    comment: &str,
    request_id: Option<String>,
) -> Result<()> {
    let request = PostReviewRequest {
        order_id: order_id.to_owned(),
        request_id: request_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        rating,
        comment: comment.to_owned(),
    };
    let review = mesh.store.post_review(authed(request, &mesh.customer(customer)?)).await?.into_inner().review;
    print!("{}", show::review(&review.unwrap_or_default()));
    Ok(())
}

/// `foodmesh reviews STORE`: every review, newest first.
pub async fn reviews(mesh: &mut Mesh, store_id: &str) -> Result<()> {
    let token = mesh.customer("browser")?;
    let mut page_token = String::new();
    let mut first = true;
    loop {
        let request = ListReviewsRequest { store_id: store_id.to_owned(), page_size: 100, page_token };
        let page = mesh.store.list_reviews(authed(request, &token)).await?.into_inner();
        if first {
            println!("{store_id}: {:.1} stars from {} reviews", page.average_rating, page.review_count);
            first = false;
        }
        for review in &page.reviews {
            print!("{}", show::review(review));
        }
        if page.next_page_token.is_empty() {
            return Ok(());
        }
        page_token = page.next_page_token;
    }
}

/// `foodmesh preferred`.
pub async fn preferred(mesh: &mut Mesh, customer: &str, action: PreferredAction, store_id: Option<&str>) -> Result<()> {
    let token = mesh.customer(customer)?;
    let store = || store_id.map(str::to_owned).context("name the store: foodmesh preferred --customer C add|remove STORE");
    let request_id = uuid::Uuid::new_v4().to_string();
    match action {
        PreferredAction::Add => {
            let request = AddPreferredStoreRequest { store_id: store()?, request_id };
            let added = mesh.store.add_preferred_store(authed(request, &token)).await?.into_inner();
            let name = added.preferred_store.and_then(|p| p.store).map(|s| s.name).unwrap_or_default();
            println!("{customer} prefers {name}");
        }
        PreferredAction::Remove => {
            let store_id = store()?;
            let request = RemovePreferredStoreRequest { store_id: store_id.clone(), request_id };
            let removed = mesh.store.remove_preferred_store(authed(request, &token)).await?.into_inner().removed;
            println!("{store_id}: {}", if removed { "removed" } else { "was not a preferred store" });
        }
        PreferredAction::List => {
            let mut page_token = String::new();
            loop {
                let request = ListPreferredStoresRequest { page_size: 100, page_token };
                let page = mesh.store.list_preferred_stores(authed(request, &token)).await?.into_inner();
                for preferred in page.preferred_stores {
                    let s = preferred.store.unwrap_or_default();
                    println!("{:<14} {:<18} added {}", s.store_id, s.name, show::time(preferred.added_at.as_ref()));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
    }
    Ok(())
}
