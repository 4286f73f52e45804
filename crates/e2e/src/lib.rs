//! A test harness for the whole mesh: a real nats-server, the four services
//! (the same code as their binaries) on free loopback ports, and their
//! databases on SQLite files or a real PostgreSQL
//! (`FOODMESH_TEST_BACKEND=postgres`). Services can be stopped and started
//! again on the same port with the same data, to test outages.
//!
//! # Layout
//! - [`Mesh`]: start, stop and restart services; clients and tokens.
//! - [`Webhook`]: a local HTTP endpoint that records (and can refuse) calls.
//! - [`checker`]: the saga's invariants, read from every service's database.
//! - [`processes`]: the same mesh as real processes, for `kill -9`.
#![forbid(unsafe_code)]

use std::{net::SocketAddr, time::Duration};

use foodmesh_platform::{
    lifecycle::Running,
    testing::{NatsServer, TestDatabases, TestKeys, authed, backend_from_env, eventually, service_env},
};
use foodmesh_proto::{
    notification::v1::notification_service_client::NotificationServiceClient,
    order::v1::{
        GetOrderRequest, GetPaymentCircuitRequest, GetPaymentCircuitResponse, Order, OrderStatus, PlaceOrderLine,
        PlaceOrderRequest, circuit_service_client::CircuitServiceClient, order_service_client::OrderServiceClient,
    },
    payment::v1::{
        Faults, GetPaymentRequest, Payment, SetFaultsRequest, fault_service_client::FaultServiceClient,
        get_payment_request::Lookup, payment_service_client::PaymentServiceClient,
    },
    store::v1::{ListStoreOrdersRequest, StoreOrder, store_service_client::StoreServiceClient},
};
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

pub mod checker;
pub mod processes;
mod webhook;
pub use webhook::Webhook;

/// How many times JetStream delivered a message again to a durable consumer
/// (after a missed ack, a crash, a retry), over every consumer of the event
/// streams: each consumer's delivery count less the messages it was offered.
pub async fn redeliveries(nats_url: &str) -> u64 {
    use futures::TryStreamExt as _;
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await.expect("nats"));
    let mut total = 0;
    // The catalog keeps only each store's newest message, so its deliveries
    // cannot be compared with what it holds; parked messages are read, not consumed.
    use foodmesh_platform::messaging::{ORDER_EVENTS, PAYMENT_EVENTS, STORE_EVENTS};
    for spec in [ORDER_EVENTS, PAYMENT_EVENTS, STORE_EVENTS] {
        let Ok(stream) = js.get_stream(spec.name).await else { continue };
        let consumers: Vec<_> = stream.consumers().try_collect().await.expect("consumers");
        for info in consumers {
            let filters = if info.config.filter_subjects.is_empty() {
                vec![info.config.filter_subject.clone()]
            } else {
                info.config.filter_subjects.clone()
            };
            let mut offered = 0;
            for filter in filters {
                let filter = if filter.is_empty() { ">".to_owned() } else { filter };
                let subjects: std::collections::HashMap<String, usize> =
                    stream.info_with_subjects(filter).await.expect("subjects").try_collect().await.expect("subjects");
                offered += subjects.values().sum::<usize>() as u64;
            }
            // Messages still pending were not offered yet.
            offered = offered.saturating_sub(info.num_pending);
            total += info.delivered.consumer_sequence.saturating_sub(offered);
        }
    }
    total
}

/// Prints one row of the fault table (`--nocapture` shows it): the
/// scenario, orders checked, violations, redeliveries, duplicates the inboxes
/// suppressed and re-publishes JetStream dropped.
pub async fn print_figures(scenario: &str, report: &checker::Report, nats_url: &str) {
    eprintln!(
        "FIGURES | {scenario} | {} orders | {} violations | {} redeliveries | {} duplicates suppressed | {} re-publishes dropped",
        report.orders,
        report.violations.len(),
        redeliveries(nats_url).await,
        report.duplicates_suppressed,
        report.republishes_dropped
    );
}

/// How long a test waits for the saga to reach a state before failing.
pub const SAGA_TIMEOUT: Duration = Duration::from_secs(20);

/// The four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// order
    Order,
    /// payment
    Payment,
    /// store
    Store,
    /// notification
    Notification,
}

/// Options of a test mesh.
#[derive(Debug, Clone, Default)]
pub struct MeshOptions {
    /// Run the auto-kitchen with this delay between steps.
    pub auto_kitchen: Option<Duration>,
    /// Send notifications to this webhook instead of the log.
    pub webhook_url: Option<String>,
    /// Extra settings of the order service (`FOODMESH_...` pairs).
    pub order_env: Vec<(String, String)>,
    /// Extra settings of the payment service.
    pub payment_env: Vec<(String, String)>,
}

/// A running mesh.
#[derive(Debug)]
pub struct Mesh {
    // Fields drop in this order: the services first (dropping a `Running`
    // aborts it), then what they use, so no service outlives its broker or
    // database.
    running: [Option<Running>; 4],
    replicas: Vec<Running>,
    addrs: [Option<SocketAddr>; 4],
    options: MeshOptions,
    /// The nats-server.
    pub nats: NatsServer,
    /// The signing keys; tokens for any caller.
    pub keys: TestKeys,
    dbs: TestDatabases,
}

fn index(service: Service) -> usize {
    match service {
        Service::Order => 0,
        Service::Payment => 1,
        Service::Store => 2,
        Service::Notification => 3,
    }
}

impl Mesh {
    /// A mesh with default options.
    pub async fn start() -> Mesh {
        Self::start_with(MeshOptions::default()).await
    }

    /// A mesh with `options`; returns once every service is SERVING and the
    /// order service has the store's catalog.
    pub async fn start_with(options: MeshOptions) -> Mesh {
        foodmesh_platform::testing::init_logs();
        let mut mesh = Mesh {
            nats: NatsServer::start().await,
            keys: TestKeys::new(),
            dbs: TestDatabases::new(backend_from_env()),
            options,
            running: [None, None, None, None],
            addrs: [None; 4],
            replicas: Vec::new(),
        };
        for service in [Service::Payment, Service::Store, Service::Notification, Service::Order] {
            mesh.start_service(service).await;
        }
        mesh.wait_for_catalog().await;
        mesh
    }

    /// Starts one service (again), on the port it had before, with its data.
    pub async fn start_service(&mut self, service: Service) {
        let running = self.launch(service, self.addrs[index(service)]).await;
        self.addrs[index(service)] = Some(running.local_addr());
        self.running[index(service)] = Some(running);
    }

    /// Starts one more replica of `service` on a new port, sharing its
    /// database and durable consumers with the first. Returns its address.
    pub async fn start_replica(&mut self, service: Service) -> SocketAddr {
        let running = self.launch(service, None).await;
        let addr = running.local_addr();
        self.replicas.push(running);
        addr
    }

    async fn launch(&self, service: Service, addr: Option<SocketAddr>) -> Running {
        let name = match service {
            Service::Order => "order",
            Service::Payment => "payment",
            Service::Store => "store",
            Service::Notification => "notification",
        };
        let mut env = service_env(&self.dbs.url(name).await, &self.nats.url(), &self.keys);
        if let Some(addr) = addr {
            env.push(("FOODMESH_SERVER__LISTEN_ADDR".into(), addr.to_string()));
        }
        let running = match service {
            Service::Payment => {
                env.extend(self.options.payment_env.iter().cloned());
                foodmesh_payment::start(foodmesh_payment::Settings::from_env_pairs(env).expect("settings")).await
            }
            Service::Store => {
                if let Some(step) = self.options.auto_kitchen {
                    let ms = step.as_millis().to_string();
                    for key in ["ENABLED", "COOK_AFTER_MS", "DELIVER_AFTER_MS", "COMPLETE_AFTER_MS", "TICK_MS"] {
                        let value = if key == "ENABLED" {
                            "true".to_owned()
                        } else if key == "TICK_MS" {
                            "20".to_owned()
                        } else {
                            ms.clone()
                        };
                        env.push((format!("FOODMESH_AUTO_KITCHEN__{key}"), value));
                    }
                }
                foodmesh_store::start(foodmesh_store::Settings::from_env_pairs(env).expect("settings")).await
            }
            Service::Notification => {
                if let Some(url) = &self.options.webhook_url {
                    env.push(("FOODMESH_CHANNEL__KIND".into(), "webhook".into()));
                    env.push(("FOODMESH_CHANNEL__WEBHOOK_URL".into(), url.clone()));
                    env.push(("FOODMESH_CHANNEL__BACKOFF_INITIAL_MS".into(), "50".into()));
                    env.push(("FOODMESH_CHANNEL__SWEEP_INTERVAL_MS".into(), "50".into()));
                }
                foodmesh_notification::start(foodmesh_notification::Settings::from_env_pairs(env).expect("settings")).await
            }
            Service::Order => {
                let payment = self.addrs[index(Service::Payment)].expect("payment starts first");
                env.push(("FOODMESH_PAYMENT__URL".into(), format!("http://{payment}")));
                env.push(("FOODMESH_PAYMENT__TIMEOUT_MS".into(), "2000".into()));
                env.extend(self.options.order_env.iter().cloned());
                foodmesh_order::start(foodmesh_order::Settings::from_env_pairs(env).expect("settings")).await
            }
        }
        .unwrap_or_else(|e| panic!("{name} failed to start: {e}"));
        assert!(running.wait_until_serving(SAGA_TIMEOUT).await, "{name} never became SERVING");
        running
    }

    /// The database URL of a service (`"order"`, `"payment"`, ...).
    pub async fn database_url(&self, name: &str) -> String {
        self.dbs.url(name).await
    }

    /// Rebuilds order's status view from the streams (or only compares, with
    /// `check_only`), as `foodmesh-order rebuild-view` does beside the
    /// running service.
    pub async fn rebuild_order_view(&self, check_only: bool) -> foodmesh_order::app::rebuild::RebuildReport {
        let env = service_env(&self.dbs.url("order").await, &self.nats.url(), &self.keys);
        let settings = foodmesh_order::Settings::from_env_pairs(env).expect("settings");
        foodmesh_order::startup::rebuild_view(settings, check_only).await.expect("rebuild-view")
    }

    /// Reads every service's database and checks the saga's invariants.
    pub async fn check(&self) -> checker::Report {
        checker::check_databases(&self.dbs).await
    }

    /// Prints the scenario's row of the fault table (see [`print_figures`]).
    pub async fn print_figures(&self, scenario: &str, report: &checker::Report) {
        print_figures(scenario, report, &self.nats.url()).await;
    }

    /// Waits until the mesh is quiet and every invariant holds; fails the
    /// test with the violations left after [`SAGA_TIMEOUT`]. Returns the report.
    pub async fn assert_invariants(&self) -> checker::Report {
        let deadline = tokio::time::Instant::now() + SAGA_TIMEOUT;
        loop {
            let report = self.check().await;
            if report.violations.is_empty() {
                return report;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "{} invariant violations over {} orders:\n{}",
                    report.violations.len(),
                    report.orders,
                    report.violations.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops one service in order (drain, finish in-flight, stop consumers).
    pub async fn stop_service(&mut self, service: Service) {
        if let Some(running) = self.running[index(service)].take() {
            running.stop().await.expect("stops cleanly");
        }
    }

    /// The address of a service.
    pub fn addr(&self, service: Service) -> SocketAddr {
        self.addrs[index(service)].expect("started")
    }

    fn channel(&self, service: Service) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr(service))).expect("uri").connect_lazy()
    }

    /// A client of the order service.
    pub fn order(&self) -> OrderServiceClient<Channel> {
        OrderServiceClient::new(self.channel(Service::Order))
    }

    /// A client of the payment service.
    pub fn payment(&self) -> PaymentServiceClient<Channel> {
        PaymentServiceClient::new(self.channel(Service::Payment))
    }

    /// A client of payment's fault injection (operator tokens only).
    pub fn payment_faults(&self) -> FaultServiceClient<Channel> {
        FaultServiceClient::new(self.channel(Service::Payment))
    }

    /// Sets payment's injected faults as an operator.
    pub async fn set_payment_faults(&self, faults: Faults) {
        let request = SetFaultsRequest { request_id: uuid::Uuid::new_v4().to_string(), faults: Some(faults) };
        self.payment_faults().set_faults(authed(request, &self.keys.operator())).await.expect("SetFaults");
    }

    /// Order's payment circuit, as an operator sees it.
    pub async fn payment_circuit(&self) -> GetPaymentCircuitResponse {
        let mut client = CircuitServiceClient::new(self.channel(Service::Order));
        let request = authed(GetPaymentCircuitRequest {}, &self.keys.operator());
        client.get_payment_circuit(request).await.expect("GetPaymentCircuit").into_inner()
    }

    /// A client of the store service.
    pub fn store(&self) -> StoreServiceClient<Channel> {
        StoreServiceClient::new(self.channel(Service::Store))
    }

    /// A client of the store replica at `addr` (from [`Mesh::start_replica`]).
    pub fn store_at(&self, addr: SocketAddr) -> StoreServiceClient<Channel> {
        StoreServiceClient::new(Channel::from_shared(format!("http://{addr}")).expect("uri").connect_lazy())
    }

    /// A client of the notification service.
    pub fn notification(&self) -> NotificationServiceClient<Channel> {
        NotificationServiceClient::new(self.channel(Service::Notification))
    }

    /// `Bearer ...` for a customer.
    pub fn customer(&self, id: &str) -> String {
        self.keys.customer(id)
    }

    /// `Bearer ...` for a store's staff.
    pub fn staff(&self, store_id: &str) -> String {
        self.keys.staff(store_id)
    }

    /// Waits until the order service prices orders for the demo stores.
    async fn wait_for_catalog(&self) {
        wait_for_catalog(self.order(), self.customer("catalog-probe")).await;
    }

    /// Places an order (request id `request_id`) for `customer` and returns it.
    ///
    /// Like the well-behaved client the API asks for, it retries an
    /// UNAVAILABLE answer with the same request id after its `RetryInfo`
    /// delay: a disk that stalls for seconds under the test PostgreSQL (seen
    /// on this host) makes payment miss order's 2 s deadline now and then,
    /// and a test about something else must not fail on that. Every retry is
    /// logged; the tests of unavailability call PlaceOrder themselves.
    pub async fn place(&self, customer: &str, request_id: &str, store_id: &str, lines: &[(&str, i32)]) -> Order {
        let request = place_request(request_id, store_id, lines, "tok_visa");
        let give_up = tokio::time::Instant::now() + SAGA_TIMEOUT;
        loop {
            match self.order().place_order(authed(request.clone(), &self.customer(customer))).await {
                Ok(reply) => return reply.into_inner().order.expect("order"),
                Err(status) if status.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < give_up => {
                    let delay = status
                        .get_details_retry_info()
                        .and_then(|r| r.retry_delay)
                        .unwrap_or(Duration::from_millis(200))
                        .min(Duration::from_secs(2));
                    tracing::warn!(request_id, ?delay, %status, "PlaceOrder unavailable; retrying with the same request_id");
                    tokio::time::sleep(delay).await;
                }
                Err(status) => panic!("order placed: {status:?}"),
            }
        }
    }

    /// The store's queue (first 100 orders), as its staff sees it.
    pub async fn store_orders(&self, store_id: &str) -> Vec<StoreOrder> {
        let request = ListStoreOrdersRequest { page_size: 100, ..Default::default() };
        self.store().list_store_orders(authed(request, &self.staff(store_id))).await.expect("list").into_inner().orders
    }

    /// The payment of one of `customer`'s orders.
    pub async fn payment_of(&self, customer: &str, order_id: &str) -> Payment {
        let request = GetPaymentRequest { lookup: Some(Lookup::OrderId(order_id.into())) };
        self.payment()
            .get_payment(authed(request, &self.customer(customer)))
            .await
            .expect("payment")
            .into_inner()
            .payment
            .expect("payment")
    }

    /// Waits until `customer`'s order satisfies `check`; returns it.
    pub async fn wait_order(&self, customer: &str, order_id: &str, what: &str, check: impl Fn(&Order) -> bool) -> Order {
        let token = self.customer(customer);
        eventually(SAGA_TIMEOUT, what, || {
            let mut client = self.order();
            let request = authed(GetOrderRequest { order_id: order_id.to_owned() }, &token);
            let check = &check;
            async move {
                let order = client.get_order(request).await.ok()?.into_inner().order?;
                check(&order).then_some(order)
            }
        })
        .await
    }

    /// Waits until the order has `status`.
    pub async fn wait_status(&self, customer: &str, order_id: &str, status: OrderStatus) -> Order {
        self.wait_order(customer, order_id, &format!("order {order_id} to be {status:?}"), |o| o.status() == status).await
    }
}

/// A PlaceOrderRequest with the given lines, delivering to a fixed address.
pub fn place_request(request_id: &str, store_id: &str, lines: &[(&str, i32)], payment_token: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        request_id: request_id.to_owned(),
        store_id: store_id.to_owned(),
        lines: lines.iter().map(|(id, q)| PlaceOrderLine { menu_item_id: (*id).to_owned(), quantity: *q }).collect(),
        delivery_address: "221B Baker Street".to_owned(),
        payment_token: payment_token.to_owned(),
    }
}

/// Waits until the order service at `client` has received the catalog.
pub(crate) async fn wait_for_catalog(client: OrderServiceClient<Channel>, token: String) {
    eventually(SAGA_TIMEOUT, "the order service to receive the catalog", || {
        let (mut client, token) = (client.clone(), token.clone());
        async move {
            // An order without lines is refused; an unknown store is named too.
            let probe = PlaceOrderRequest { request_id: "probe".into(), store_id: "green-bowl".into(), ..Default::default() };
            let err = client.place_order(authed(probe, &token)).await.expect_err("an empty order is invalid");
            let bad = tonic_types::StatusExt::get_details_bad_request(&err)?;
            (!bad.field_violations.iter().any(|v| v.field == "store_id")).then_some(())
        }
    })
    .await;
}
