//! Reviews and preferred stores, on the running mesh: a customer reviews a
//! delivered order once, any customer reads the store's reviews and rating,
//! the review is announced on STORE_EVENTS; customers keep their own lists of
//! preferred stores.

use foodmesh_e2e::{Mesh, MeshOptions, SAGA_TIMEOUT};
use foodmesh_platform::testing::{authed, eventually};
use foodmesh_proto::{
    order::v1::OrderStatus,
    store::v1::{
        AddPreferredStoreRequest, ListPreferredStoresRequest, ListReviewsRequest, ListReviewsResponse, PostReviewRequest,
        RemovePreferredStoreRequest, Review, StoreEvent, store_event,
    },
};
use futures::TryStreamExt as _;
use prost::Message as _;
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn reason(status: &Status) -> String {
    status.get_details_error_info().map(|i| i.reason).unwrap_or_default()
}

async fn post(
    mesh: &Mesh,
    customer: &str,
    order_id: &str,
    request_id: &str,
    rating: i32,
    comment: &str,
) -> Result<Review, Status> {
    let request = PostReviewRequest { order_id: order_id.into(), request_id: request_id.into(), rating, comment: comment.into() };
    Ok(mesh.store().post_review(authed(request, &mesh.customer(customer))).await?.into_inner().review.expect("review"))
}

async fn reviews(mesh: &Mesh, customer: &str, store_id: &str, page_size: i32, page_token: &str) -> ListReviewsResponse {
    let request = ListReviewsRequest { store_id: store_id.into(), page_size, page_token: page_token.into() };
    mesh.store().list_reviews(authed(request, &mesh.customer(customer))).await.expect("list reviews").into_inner()
}

/// Places an order and lets the auto-kitchen deliver it.
async fn delivered(mesh: &Mesh, customer: &str, request_id: &str) -> String {
    let order = mesh.place(customer, request_id, "seoul-bbq", &[("bulgogi", 1)]).await;
    mesh.wait_status(customer, &order.order_id, OrderStatus::Delivered).await;
    order.order_id
}

fn fast_kitchen() -> MeshOptions {
    MeshOptions { auto_kitchen: Some(std::time::Duration::from_millis(50)), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivered_order_is_reviewed_once_and_the_store_shows_it_with_its_rating() {
    let mesh = Mesh::start_with(fast_kitchen()).await;
    let first = delivered(&mesh, "alice", "a1").await;
    let second = delivered(&mesh, "alice", "a2").await;
    let bobs = delivered(&mesh, "bob", "b1").await;

    let review = post(&mesh, "alice", &first, "rev-a1", 5, "Crisp edges, generous portion.").await.expect("post");
    assert!(review.review_id.starts_with("rev_"), "{}", review.review_id);
    assert_eq!((review.store_id.as_str(), review.rating), ("seoul-bbq", 5));
    assert!(review.posted_at.is_some());

    // A retry of the same request is the same review; another request for the
    // same order is a duplicate, and so is the same request with other words.
    let retry = post(&mesh, "alice", &first, "rev-a1", 5, "Crisp edges, generous portion.").await.expect("retry");
    assert_eq!(retry, review, "a retry returns the review already posted");
    let again = post(&mesh, "alice", &first, "rev-a1-bis", 1, "Changed my mind").await.expect_err("one review per order");
    assert_eq!((again.code(), reason(&again).as_str()), (Code::AlreadyExists, "REVIEW_ALREADY_POSTED"));
    let reused = post(&mesh, "alice", &first, "rev-a1", 2, "other words").await.expect_err("request id reused");
    assert_eq!((reused.code(), reason(&reused).as_str()), (Code::AlreadyExists, "REQUEST_ID_REUSED"));

    post(&mesh, "alice", &second, "rev-a2", 3, "").await.expect("a second order, a second review");
    post(&mesh, "bob", &bobs, "rev-b1", 4, "Good").await.expect("bob's review");

    // Any customer reads them, newest first, page by page, with the rating of all.
    let page1 = reviews(&mesh, "carol", "seoul-bbq", 2, "").await;
    assert_eq!(page1.review_count, 3);
    assert!((page1.average_rating - 4.0).abs() < 1e-9, "(5 + 3 + 4) / 3, got {}", page1.average_rating);
    assert_eq!(page1.reviews.iter().map(|r| r.rating).collect::<Vec<_>>(), [4, 3]);
    assert!(!page1.next_page_token.is_empty());
    let page2 = reviews(&mesh, "carol", "seoul-bbq", 2, &page1.next_page_token).await;
    assert_eq!(page2.reviews, std::slice::from_ref(&review), "the oldest last, and nothing twice");
    assert!(page2.next_page_token.is_empty());
    let none = reviews(&mesh, "carol", "pizza-napoli", 0, "").await;
    assert_eq!((none.reviews.len(), none.review_count, none.average_rating), (0, 0, 0.0));

    // Each review is announced once on STORE_EVENTS, correlated by its order.
    let js = async_nats::jetstream::new(async_nats::connect(mesh.nats.url()).await.expect("nats"));
    let stream = js.get_stream("STORE_EVENTS").await.expect("stream");
    eventually(SAGA_TIMEOUT, "three reviews published", || async {
        let counts: Vec<(String, usize)> =
            stream.info_with_subjects("store.v1.order.reviewed").await.expect("info").try_collect().await.expect("subjects");
        (counts == [("store.v1.order.reviewed".to_owned(), 3)]).then_some(())
    })
    .await;
    let last = stream.get_last_raw_message_by_subject("store.v1.order.reviewed").await.expect("the last review");
    let event = StoreEvent::decode(last.payload).expect("a StoreEvent");
    let metadata = event.metadata.expect("metadata");
    assert_eq!(metadata.correlation_id, bobs, "the last review announced is bob's, keyed by its order");
    let Some(store_event::Event::ReviewPosted(posted)) = event.event else { panic!("not a ReviewPosted: {:?}", event.event) };
    assert_eq!((posted.order_id.as_str(), posted.customer_id.as_str(), posted.rating), (bobs.as_str(), "bob", 4));

    // Order's view and the customer's notifications ignore it: still delivered, nothing new sent.
    let order = mesh.wait_status("bob", &bobs, OrderStatus::Delivered).await;
    assert_eq!(order.timeline.last().map(|c| c.status()), Some(OrderStatus::Delivered));
    mesh.assert_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_customer_of_a_delivered_order_can_review_it_and_bad_reviews_name_every_bad_field() {
    let mesh = Mesh::start().await;
    let order = mesh.place("alice", "a1", "seoul-bbq", &[("bulgogi", 1)]).await;
    mesh.wait_status("alice", &order.order_id, OrderStatus::Accepted).await;

    let early = post(&mesh, "alice", &order.order_id, "r1", 5, "").await.expect_err("not delivered yet");
    assert_eq!((early.code(), reason(&early).as_str()), (Code::FailedPrecondition, "ORDER_NOT_DELIVERED"));
    assert_eq!(early.get_details_error_info().expect("ErrorInfo").metadata.get("status").map(String::as_str), Some("RECEIVED"));

    let someone_else = post(&mesh, "mallory", &order.order_id, "r2", 1, "").await.expect_err("not hers");
    assert_eq!((someone_else.code(), reason(&someone_else).as_str()), (Code::NotFound, "ORDER_NOT_FOUND"));
    let unknown = post(&mesh, "alice", "ord_unknown", "r3", 5, "").await.expect_err("no such order");
    assert_eq!(unknown.code(), Code::NotFound);

    let staff =
        PostReviewRequest { order_id: order.order_id.clone(), request_id: "r4".into(), rating: 5, comment: String::new() };
    let staff = mesh.store().post_review(authed(staff, &mesh.staff("seoul-bbq"))).await.expect_err("staff do not review");
    assert_eq!(staff.code(), Code::PermissionDenied);

    // Without a token, nothing: not a review, not the list, not a preference.
    let mut store = mesh.store();
    let review =
        PostReviewRequest { order_id: order.order_id.clone(), request_id: "r6".into(), rating: 5, comment: String::new() };
    let results = [
        store.post_review(review).await.map(|_| ()),
        store.list_reviews(ListReviewsRequest { store_id: "seoul-bbq".into(), ..Default::default() }).await.map(|_| ()),
        store
            .add_preferred_store(AddPreferredStoreRequest { store_id: "seoul-bbq".into(), request_id: "p".into() })
            .await
            .map(|_| ()),
    ];
    for result in results {
        let err = result.expect_err("no token");
        assert_eq!((err.code(), reason(&err).as_str()), (Code::Unauthenticated, "TOKEN_MISSING"));
    }

    let long = "x".repeat(501);
    let bad = post(&mesh, "alice", "", "", 6, &long).await.expect_err("bad fields");
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields: Vec<String> =
        bad.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    fields.sort();
    assert_eq!(fields, ["comment", "order_id", "rating", "request_id"]);
    let zero = post(&mesh, "alice", &order.order_id, "r5", 0, "control\u{7}char").await.expect_err("bad fields");
    let mut fields: Vec<String> =
        zero.get_details_bad_request().expect("BadRequest").field_violations.into_iter().map(|v| v.field).collect();
    fields.sort();
    assert_eq!(fields, ["comment", "rating"]);

    let unknown_store = ListReviewsRequest { store_id: "no-such-store".into(), ..Default::default() };
    let unknown_store =
        mesh.store().list_reviews(authed(unknown_store, &mesh.customer("alice"))).await.expect_err("unknown store");
    assert_eq!((unknown_store.code(), reason(&unknown_store).as_str()), (Code::NotFound, "STORE_NOT_FOUND"));
    assert!(reviews(&mesh, "alice", "seoul-bbq", 0, "").await.reviews.is_empty(), "nothing was stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_customer_keeps_their_own_preferred_stores() {
    let mesh = Mesh::start().await;
    let add = |customer: &'static str, store: &'static str| {
        let mut client = mesh.store();
        let token = mesh.customer(customer);
        async move {
            let request = AddPreferredStoreRequest { store_id: store.into(), request_id: format!("add-{store}") };
            client.add_preferred_store(authed(request, &token)).await.map(|r| r.into_inner().preferred_store.expect("store"))
        }
    };
    let list = |customer: &'static str| {
        let mut client = mesh.store();
        let token = mesh.customer(customer);
        async move {
            let request = ListPreferredStoresRequest { page_size: 0, page_token: String::new() };
            let stores = client.list_preferred_stores(authed(request, &token)).await.expect("list").into_inner();
            stores.preferred_stores.into_iter().map(|p| p.store.expect("store").store_id).collect::<Vec<_>>()
        }
    };

    let bbq = add("alice", "seoul-bbq").await.expect("add");
    assert_eq!(bbq.store.as_ref().map(|s| s.name.as_str()), Some("Seoul BBQ House"));
    add("alice", "pizza-napoli").await.expect("add");
    let again = add("alice", "seoul-bbq").await.expect("adding twice succeeds");
    assert_eq!(again, bbq, "the first registration stands");
    add("bob", "green-bowl").await.expect("add");

    assert_eq!(list("alice").await, ["pizza-napoli", "seoul-bbq"], "most recently added first, each once");
    assert_eq!(list("bob").await, ["green-bowl"], "bob sees only his own");

    let unknown = add("alice", "no-such-store").await.expect_err("unknown store");
    assert_eq!((unknown.code(), reason(&unknown).as_str()), (Code::NotFound, "STORE_NOT_FOUND"));
    let bad = add("alice", "bad id!").await.expect_err("bad id");
    assert_eq!(bad.code(), Code::InvalidArgument);

    let remove = |store: &'static str| {
        let mut client = mesh.store();
        let token = mesh.customer("alice");
        async move {
            let request = RemovePreferredStoreRequest { store_id: store.into(), request_id: format!("rm-{store}") };
            client.remove_preferred_store(authed(request, &token)).await.expect("remove").into_inner().removed
        }
    };
    assert!(remove("seoul-bbq").await);
    assert!(!remove("seoul-bbq").await, "removing again succeeds and says it was not there");
    assert_eq!(list("alice").await, ["pizza-napoli"]);
    assert_eq!(list("bob").await, ["green-bowl"]);

    let staff = ListPreferredStoresRequest::default();
    let staff = mesh.store().list_preferred_stores(authed(staff, &mesh.staff("seoul-bbq"))).await.expect_err("customers only");
    assert_eq!(staff.code(), Code::PermissionDenied);
}
