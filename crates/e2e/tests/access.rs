//! Who sees what, what bad input gets back, and what tools see: identity from
//! tokens only, NOT_FOUND for other people's orders, INVALID_ARGUMENT naming
//! every bad field, pagination, health and reflection for grpcurl and buf.

use std::{path::PathBuf, process::Command, time::Duration};

use foodmesh_e2e::{Mesh, Service, place_request};
use foodmesh_platform::{
    auth::Principal,
    testing::{TestKeys, authed, workspace_root},
};
use foodmesh_proto::{
    notification::v1::ListNotificationsRequest,
    order::v1::{CancelOrderRequest, GetOrderRequest, ListOrdersRequest, PlaceOrderLine, PlaceOrderRequest, WatchOrderRequest},
    payment::v1::{GetPaymentRequest, get_payment_request::Lookup},
    store::v1::{GetMenuRequest, ListStoreOrdersRequest, ListStoresRequest, StartCookingRequest, StoreOrderStatus},
};
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn bad_fields(status: &Status) -> Vec<String> {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(status.get_details_error_info().expect("ErrorInfo").reason, "INVALID_REQUEST");
    status.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_customers_order_is_not_found_anywhere() {
    let mesh = Mesh::start().await;
    let order = mesh.place("alice", "mine", "seoul-bbq", &[("bulgogi", 1)]).await;
    let bob = mesh.customer("bob");
    let get = |id: &str| authed(GetOrderRequest { order_id: id.to_owned() }, &bob);

    let hidden = mesh.order().get_order(get(&order.order_id)).await.expect_err("hidden");
    let missing = mesh.order().get_order(get("ord_00000000000000000000000000000000")).await.expect_err("missing");
    assert_eq!((hidden.code(), hidden.message()), (missing.code(), missing.message()), "hidden looks exactly like missing");
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(hidden.get_details_error_info().expect("ErrorInfo").reason, "ORDER_NOT_FOUND");

    let watch = mesh.order().watch_order(authed(WatchOrderRequest { order_id: order.order_id.clone() }, &bob)).await;
    assert_eq!(watch.expect_err("hidden").code(), Code::NotFound);
    let cancel = CancelOrderRequest { order_id: order.order_id.clone(), request_id: "x".into(), reason: String::new() };
    assert_eq!(mesh.order().cancel_order(authed(cancel, &bob)).await.expect_err("hidden").code(), Code::NotFound);
    let listed = mesh.order().list_orders(authed(ListOrdersRequest::default(), &bob)).await.expect("list");
    assert!(listed.into_inner().orders.is_empty());
    let payment = GetPaymentRequest { lookup: Some(Lookup::OrderId(order.order_id.clone())) };
    assert_eq!(mesh.payment().get_payment(authed(payment, &bob)).await.expect_err("hidden").code(), Code::NotFound);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let messages = ListNotificationsRequest { order_id: order.order_id.clone(), ..Default::default() };
    let messages = mesh.notification().list_notifications(authed(messages, &bob)).await.expect("list");
    assert!(messages.into_inner().notifications.is_empty(), "bob reads none of alice's messages");
    let alice = ListNotificationsRequest { order_id: order.order_id.clone(), ..Default::default() };
    let alice = mesh.notification().list_notifications(authed(alice, &mesh.customer("alice"))).await.expect("list");
    assert!(!alice.into_inner().notifications.is_empty(), "alice reads hers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_staff_see_and_move_only_their_own_stores_orders() {
    let mesh = Mesh::start().await;
    let bbq = mesh.place("alice", "a", "seoul-bbq", &[("galbi", 1)]).await;
    let pizza = mesh.place("alice", "b", "pizza-napoli", &[("margherita", 1)]).await;
    mesh.wait_status("alice", &bbq.order_id, foodmesh_proto::order::v1::OrderStatus::Accepted).await;
    mesh.wait_status("alice", &pizza.order_id, foodmesh_proto::order::v1::OrderStatus::Accepted).await;

    let staff = mesh.staff("pizza-napoli");
    let all = ListStoreOrdersRequest { page_size: 50, ..Default::default() };
    let listed = mesh.store().list_store_orders(authed(all, &staff)).await.expect("list").into_inner().orders;
    assert_eq!(listed.iter().map(|o| o.order_id.as_str()).collect::<Vec<_>>(), [pizza.order_id.as_str()]);

    let cook = StartCookingRequest { order_id: bbq.order_id.clone(), request_id: "x".into() };
    let err = mesh.store().start_cooking(authed(cook, &staff)).await.expect_err("not their order");
    assert_eq!(err.code(), Code::NotFound);

    let cooking_only =
        ListStoreOrdersRequest { statuses: vec![StoreOrderStatus::Cooking.into()], page_size: 50, ..Default::default() };
    assert!(mesh.store().list_store_orders(authed(cooking_only, &staff)).await.expect("list").into_inner().orders.is_empty());
    let cook = StartCookingRequest { order_id: pizza.order_id.clone(), request_id: "y".into() };
    mesh.store().start_cooking(authed(cook, &staff)).await.expect("their order");
    let cooking_only =
        ListStoreOrdersRequest { statuses: vec![StoreOrderStatus::Cooking.into()], page_size: 50, ..Default::default() };
    assert_eq!(mesh.store().list_store_orders(authed(cooking_only, &staff)).await.expect("list").into_inner().orders.len(), 1);

    let customer_listing = ListStoreOrdersRequest::default();
    let err =
        mesh.store().list_store_orders(authed(customer_listing, &mesh.customer("alice"))).await.expect_err("customers cannot");
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_are_unauthenticated_on_every_service() {
    let mesh = Mesh::start().await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let expired = format!(
        "Bearer {}",
        mesh.keys.issuer.issue_at(&Principal::Customer { customer_id: "alice".into() }, now - 7200, now - 3600).expect("sign")
    );
    let foreign = TestKeys::new().customer("alice");
    let cases = [
        (None, "TOKEN_MISSING"),
        (Some(expired), "TOKEN_EXPIRED"),
        (Some(foreign), "TOKEN_INVALID"),
        (Some("Bearer not.a.jwt".to_owned()), "TOKEN_INVALID"),
    ];
    for (token, reason) in cases {
        let call = |message| match &token {
            Some(token) => authed(message, token),
            None => tonic::Request::new(message),
        };
        let results = [
            mesh.order().list_orders(call(ListOrdersRequest::default())).await.map(|_| ()),
            mesh.store().list_stores(authed_or(&token, ListStoresRequest::default())).await.map(|_| ()),
            mesh.payment()
                .get_payment(authed_or(&token, GetPaymentRequest { lookup: Some(Lookup::OrderId("x".into())) }))
                .await
                .map(|_| ()),
            mesh.notification().list_notifications(authed_or(&token, ListNotificationsRequest::default())).await.map(|_| ()),
        ];
        for (service, result) in ["order", "store", "payment", "notification"].iter().zip(results) {
            let err = result.expect_err("refused");
            assert_eq!(err.code(), Code::Unauthenticated, "{service} {reason}");
            assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, reason, "{service}");
        }
    }
    let staff = mesh.staff("seoul-bbq");
    let err = mesh.order().list_orders(authed(ListOrdersRequest::default(), &staff)).await.expect_err("wrong role");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.get_details_error_info().expect("ErrorInfo").reason, "ROLE_NOT_ALLOWED");
}

fn authed_or<T>(token: &Option<String>, message: T) -> tonic::Request<T> {
    match token {
        Some(token) => authed(message, token),
        None => tonic::Request::new(message),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_order_names_every_bad_field_and_nothing_is_charged_or_stored() {
    let mesh = Mesh::start().await;
    let alice = mesh.customer("alice");
    let line = |id: &str, quantity| PlaceOrderLine { menu_item_id: id.into(), quantity };
    let request = PlaceOrderRequest {
        request_id: "has spaces!".into(),
        store_id: "seoul-bbq".into(),
        lines: vec![line("bulgogi", 0), line("sushi", 1), line("galbi", 21), line("bulgogi", 2), line("", 1)],
        delivery_address: String::new(),
        payment_token: String::new(),
    };
    let err = mesh.order().place_order(authed(request, &alice)).await.expect_err("invalid");
    assert_eq!(
        bad_fields(&err),
        [
            "request_id",
            "delivery_address",
            "payment_token",
            "lines[0].quantity",
            "lines[2].quantity",
            "lines[3].menu_item_id",
            "lines[4].menu_item_id",
            "lines[1].menu_item_id",
        ]
    );

    let unknown_store = place_request("r", "no-such-store", &[("bulgogi", 1)], "tok_visa");
    assert_eq!(bad_fields(&mesh.order().place_order(authed(unknown_store, &alice)).await.expect_err("invalid")), ["store_id"]);
    let empty = place_request("r", "seoul-bbq", &[], "tok_visa");
    assert_eq!(bad_fields(&mesh.order().place_order(authed(empty, &alice)).await.expect_err("invalid")), ["lines"]);
    let many: Vec<(String, i32)> = (0..21).map(|i| (format!("item-{i}"), 1)).collect();
    let many: Vec<(&str, i32)> = many.iter().map(|(id, q)| (id.as_str(), *q)).collect();
    let too_many = place_request("r", "seoul-bbq", &many, "tok_visa");
    assert!(
        bad_fields(&mesh.order().place_order(authed(too_many, &alice)).await.expect_err("invalid")).contains(&"lines".to_owned())
    );

    let listed = mesh.order().list_orders(authed(ListOrdersRequest::default(), &alice)).await.expect("list");
    assert!(listed.into_inner().orders.is_empty(), "no order");
    let payment = GetPaymentRequest { lookup: Some(Lookup::OrderId("r".into())) };
    assert_eq!(
        mesh.payment().get_payment(authed(payment, &mesh.keys.operator())).await.expect_err("no charge").code(),
        Code::NotFound
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_paging_and_filters_are_invalid_arguments_on_every_service() {
    let mesh = Mesh::start().await;
    let alice = mesh.customer("alice");
    let staff = mesh.staff("seoul-bbq");
    let get = GetOrderRequest { order_id: "../../etc/passwd".into() };
    assert_eq!(bad_fields(&mesh.order().get_order(authed(get, &alice)).await.expect_err("bad id")), ["order_id"]);
    let cancel = CancelOrderRequest { order_id: String::new(), request_id: String::new(), reason: "x".repeat(201) };
    assert_eq!(
        bad_fields(&mesh.order().cancel_order(authed(cancel, &alice)).await.expect_err("bad")),
        ["order_id", "request_id", "reason"]
    );
    let page = ListOrdersRequest { page_size: -1, page_token: "garbage".into() };
    assert_eq!(bad_fields(&mesh.order().list_orders(authed(page, &alice)).await.expect_err("bad")), ["page_size", "page_token"]);
    let statuses = ListStoreOrdersRequest { statuses: vec![0, 99], ..Default::default() };
    assert_eq!(
        bad_fields(&mesh.store().list_store_orders(authed(statuses, &staff)).await.expect_err("bad")),
        ["statuses[0]", "statuses[1]"]
    );
    let menu = GetMenuRequest { store_id: "no-such-store".into() };
    let err = mesh.store().get_menu(authed(menu, &alice)).await.expect_err("unknown store");
    assert_eq!(
        (err.code(), err.get_details_error_info().expect("ErrorInfo").reason.as_str()),
        (Code::NotFound, "STORE_NOT_FOUND")
    );
    let cook = StartCookingRequest { order_id: "ord_x".into(), request_id: "r".into() };
    assert_eq!(mesh.store().start_cooking(authed(cook, &staff)).await.expect_err("unknown").code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_orders_pages_through_every_order_newest_first() {
    let mesh = Mesh::start().await;
    let mut placed = Vec::new();
    for i in 0..5 {
        placed.push(mesh.place("dave", &format!("p{i}"), "green-bowl", &[("green-smoothie", 1)]).await.order_id);
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let request = ListOrdersRequest { page_size: 2, page_token: token.clone() };
        let page = mesh.order().list_orders(authed(request, &mesh.customer("dave"))).await.expect("page").into_inner();
        pages += 1;
        assert!(page.orders.len() <= 2);
        seen.extend(page.orders.into_iter().map(|o| o.order_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    placed.reverse();
    assert_eq!(seen, placed, "each order once, newest first");
    assert_eq!(pages, 3);

    let stores =
        mesh.store().list_stores(authed(ListStoresRequest { page_size: 2, ..Default::default() }, &mesh.customer("dave"))).await;
    let stores = stores.expect("stores").into_inner();
    assert_eq!(stores.stores.len(), 2);
    let rest = ListStoresRequest { page_size: 2, page_token: stores.next_page_token };
    let rest = mesh.store().list_stores(authed(rest, &mesh.customer("dave"))).await.expect("stores").into_inner();
    assert_eq!((rest.stores.len(), rest.next_page_token.as_str()), (1, ""), "three demo stores");
}

fn tool(name: &str) -> PathBuf {
    workspace_root().join(".tools/bin").join(name)
}

/// `grpcurl -plaintext ARGS...`, run to its end.
fn grpcurl(args: &[&str]) -> std::process::Output {
    Command::new(tool("grpcurl")).arg("-plaintext").args(args).output().expect("grpcurl runs (scripts/bootstrap)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_and_buf_curl_find_every_service_by_reflection_and_call_it() {
    let mesh = Mesh::start().await;
    for (service, name, also) in [
        (Service::Order, "foodmesh.order.v1.OrderService", Some("foodmesh.order.v1.CircuitService")),
        (Service::Payment, "foodmesh.payment.v1.PaymentService", Some("foodmesh.payment.v1.FaultService")),
        (Service::Store, "foodmesh.store.v1.StoreService", None),
        (Service::Notification, "foodmesh.notification.v1.NotificationService", None),
    ] {
        let addr = mesh.addr(service).to_string();
        // grpcurl 1.8 speaks reflection v1alpha only. Each port lists what it
        // serves and nothing else: another service's name there would only
        // lead a caller to UNIMPLEMENTED.
        let listed = grpcurl(&[&addr, "list"]);
        let listed = String::from_utf8_lossy(&listed.stdout);
        let mut expected = vec![
            name,
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ];
        expected.extend(also);
        expected.sort_unstable();
        assert_eq!(listed.lines().collect::<Vec<_>>(), expected, "grpcurl list on {name}'s port");
        // And the other reflection version is described through this one.
        let described = grpcurl(&[&addr, "describe", "grpc.reflection.v1.ServerReflection"]);
        assert!(String::from_utf8_lossy(&described.stdout).contains("rpc ServerReflectionInfo"), "{described:?}");

        // buf curl asks for reflection v1 first.
        let url = format!("http://{addr}/grpc.health.v1.Health/Check");
        let health = Command::new(tool("buf"))
            .args([
                "curl",
                "--protocol",
                "grpc",
                "--http2-prior-knowledge",
                "--reflect-protocol",
                "grpc-v1",
                "-d",
                &format!("{{\"service\":\"{name}\"}}"),
                &url,
            ])
            .output()
            .expect("buf runs");
        let body = String::from_utf8_lossy(&health.stdout);
        assert!(body.contains("SERVING"), "buf curl health of {name}: {body} {}", String::from_utf8_lossy(&health.stderr));
    }

    let authorization = format!("authorization: {}", mesh.customer("erin"));
    let store = mesh.addr(Service::Store).to_string();
    let menu =
        grpcurl(&["-H", &authorization, "-d", r#"{"store_id":"seoul-bbq"}"#, &store, "foodmesh.store.v1.StoreService/GetMenu"]);
    let menu = String::from_utf8_lossy(&menu.stdout);
    assert!(menu.contains("\"menuItemId\": \"bulgogi\"") && menu.contains("\"amountMinor\": \"18000\""), "{menu}");

    // An error's details are decoded too: reflection serves google.rpc's types.
    let order = mesh.addr(Service::Order).to_string();
    let refused = grpcurl(&[
        "-H",
        &authorization,
        "-d",
        r#"{"request_id":"r-1","store_id":"seoul-bbq","lines":[{"menu_item_id":"bulgogi","quantity":0}],"delivery_address":"1 Main St","payment_token":"tok_visa"}"#,
        &order,
        "foodmesh.order.v1.OrderService/PlaceOrder",
    ]);
    let refused = String::from_utf8_lossy(&refused.stderr);
    for shown in [
        "Code: InvalidArgument",
        r#"{"@type":"type.googleapis.com/google.rpc.ErrorInfo","domain":"order.foodmesh.dev","reason":"INVALID_REQUEST"}"#,
        r#"{"@type":"type.googleapis.com/google.rpc.BadRequest","fieldViolations":[{"field":"lines[0].quantity","description":"must be 1 to 20"}]}"#,
    ] {
        assert!(refused.contains(shown), "grpcurl shows {shown}: {refused}");
    }
}
