//! The gRPC adapter: identify the caller, convert the request, call the use
//! case, convert the answer. No business rule lives here.

use std::sync::Arc;

use foodmesh_platform::{auth::Verifier, paging::PageRequest, validation::Violations};
use foodmesh_proto::store::v1::{self as pb, store_service_server::StoreService};
use tonic::{Request, Response, Status};

use crate::{
    app::{Error, StoreApp},
    convert,
    domain::{
        kitchen::Action,
        review::{Rating, ReviewDraft},
    },
};

/// The longest review comment, in characters.
const MAX_COMMENT_CHARS: usize = 500;

mod error;

/// The `foodmesh.store.v1.StoreService` implementation.
#[derive(Debug, Clone)]
pub struct StoreGrpc {
    app: Arc<StoreApp>,
    verifier: Verifier,
}

impl StoreGrpc {
    /// The service over `app`, checking tokens with `verifier`.
    pub fn new(app: Arc<StoreApp>, verifier: Verifier) -> Self {
        Self { app, verifier }
    }

    /// The store of the calling staff member.
    fn staff_store<T>(&self, request: &Request<T>) -> Result<String, Error> {
        let caller = self.verifier.verify(request.metadata())?;
        Ok(caller.store_staff()?.to_owned())
    }

    /// The calling customer.
    fn customer<T>(&self, request: &Request<T>) -> Result<String, Error> {
        let caller = self.verifier.verify(request.metadata())?;
        Ok(caller.customer()?.to_owned())
    }

    /// Validates and applies a staff action to one of the caller's orders.
    async fn act<T>(
        &self,
        request: Request<T>,
        parts: impl FnOnce(T) -> (String, String, Action),
    ) -> Result<pb::StoreOrder, Error> {
        let store_id = self.staff_store(&request)?;
        let (order_id, request_id, action) = parts(request.into_inner());
        let mut v = Violations::new();
        v.check_request_id("order_id", &order_id);
        v.check_request_id("request_id", &request_id);
        if let Action::Reject(reason) = &action {
            v.check_text("reason", reason, 1, 200);
        }
        v.into_result(())?;
        let order = self.app.act(&store_id, &order_id, &action).await?;
        tracing::info!(%request_id, ?action, "staff action applied");
        Ok(convert::store_order(&order))
    }
}

#[tonic::async_trait]
impl StoreService for StoreGrpc {
    #[tracing::instrument(skip_all)]
    async fn list_stores(&self, request: Request<pb::ListStoresRequest>) -> Result<Response<pb::ListStoresResponse>, Status> {
        self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let pb::ListStoresRequest { page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (stores, next_page_token) = self.app.list_stores(&page).await?;
        Ok(Response::new(pb::ListStoresResponse { stores: stores.iter().map(convert::store).collect(), next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(store_id = %request.get_ref().store_id))]
    async fn get_menu(&self, request: Request<pb::GetMenuRequest>) -> Result<Response<pb::GetMenuResponse>, Status> {
        self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let pb::GetMenuRequest { store_id } = request.into_inner();
        let mut v = Violations::new();
        v.check_id("store_id", &store_id);
        v.into_result(()).map_err(Error::from)?;
        let catalog = self.app.menu(&store_id).await?;
        Ok(Response::new(pb::GetMenuResponse {
            store: Some(convert::store(&catalog.store)),
            items: convert::catalog_items(&catalog),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_store_orders(
        &self,
        request: Request<pb::ListStoreOrdersRequest>,
    ) -> Result<Response<pb::ListStoreOrdersResponse>, Status> {
        let store_id = self.staff_store(&request)?;
        let pb::ListStoreOrdersRequest { statuses, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        let mut wanted = Vec::new();
        for (i, raw) in statuses.into_iter().enumerate() {
            match pb::StoreOrderStatus::try_from(raw).ok().and_then(convert::from_status) {
                Some(status) => wanted.push(status),
                None => v.add(format!("statuses[{i}]"), "is not a store order status"),
            }
        }
        v.into_result(()).map_err(Error::from)?;
        let (orders, next_page_token) = self.app.list_orders(&store_id, &wanted, &page).await?;
        Ok(Response::new(pb::ListStoreOrdersResponse {
            orders: orders.iter().map(convert::store_order).collect(),
            next_page_token,
        }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn start_cooking(
        &self,
        request: Request<pb::StartCookingRequest>,
    ) -> Result<Response<pb::StartCookingResponse>, Status> {
        let order = self.act(request, |r| (r.order_id, r.request_id, Action::StartCooking)).await?;
        Ok(Response::new(pb::StartCookingResponse { order: Some(order) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn start_delivery(
        &self,
        request: Request<pb::StartDeliveryRequest>,
    ) -> Result<Response<pb::StartDeliveryResponse>, Status> {
        let order = self.act(request, |r| (r.order_id, r.request_id, Action::StartDelivery)).await?;
        Ok(Response::new(pb::StartDeliveryResponse { order: Some(order) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn complete_delivery(
        &self,
        request: Request<pb::CompleteDeliveryRequest>,
    ) -> Result<Response<pb::CompleteDeliveryResponse>, Status> {
        let order = self.act(request, |r| (r.order_id, r.request_id, Action::CompleteDelivery)).await?;
        Ok(Response::new(pb::CompleteDeliveryResponse { order: Some(order) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn reject_order(&self, request: Request<pb::RejectOrderRequest>) -> Result<Response<pb::RejectOrderResponse>, Status> {
        let order = self.act(request, |r| (r.order_id, r.request_id, Action::Reject(r.reason))).await?;
        Ok(Response::new(pb::RejectOrderResponse { order: Some(order) }))
    }

    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn post_review(&self, request: Request<pb::PostReviewRequest>) -> Result<Response<pb::PostReviewResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::PostReviewRequest { order_id, request_id, rating, comment } = request.into_inner();
        let bad_rating = || {
            let mut v = Violations::new();
            v.add("rating", format!("must be {} to {} stars", Rating::MIN, Rating::MAX));
            v
        };
        let parsed = Rating::parse(i64::from(rating));
        let mut v = if parsed.is_some() { Violations::new() } else { bad_rating() };
        v.check_request_id("order_id", &order_id);
        v.check_request_id("request_id", &request_id);
        v.check_text("comment", &comment, 0, MAX_COMMENT_CHARS);
        // Every bad field in one answer; the rating is then known to be valid.
        let rating = v.into_result(parsed).and_then(|r| r.ok_or_else(bad_rating)).map_err(Error::from)?;
        let review = self.app.post_review(&customer_id, &order_id, &request_id, ReviewDraft { rating, comment }).await?;
        tracing::info!(%request_id, review_id = %review.review_id, "review posted or repeated");
        Ok(Response::new(pb::PostReviewResponse { review: Some(convert::review(&review)) }))
    }

    #[tracing::instrument(skip_all, fields(store_id = %request.get_ref().store_id))]
    async fn list_reviews(&self, request: Request<pb::ListReviewsRequest>) -> Result<Response<pb::ListReviewsResponse>, Status> {
        self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let pb::ListReviewsRequest { store_id, page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        v.check_id("store_id", &store_id);
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (reviews, next_page_token, summary) = self.app.reviews(&store_id, &page).await?;
        Ok(Response::new(pb::ListReviewsResponse {
            reviews: reviews.iter().map(convert::review).collect(),
            next_page_token,
            review_count: summary.count,
            average_rating: summary.average(),
        }))
    }

    #[tracing::instrument(skip_all, fields(store_id = %request.get_ref().store_id))]
    async fn add_preferred_store(
        &self,
        request: Request<pb::AddPreferredStoreRequest>,
    ) -> Result<Response<pb::AddPreferredStoreResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::AddPreferredStoreRequest { store_id, request_id } = request.into_inner();
        let mut v = Violations::new();
        v.check_id("store_id", &store_id);
        v.check_request_id("request_id", &request_id);
        v.into_result(()).map_err(Error::from)?;
        let preferred = self.app.add_preferred_store(&customer_id, &store_id).await?;
        tracing::info!(%request_id, "preferred store added");
        Ok(Response::new(pb::AddPreferredStoreResponse { preferred_store: Some(convert::preferred_store(&preferred)) }))
    }

    #[tracing::instrument(skip_all, fields(store_id = %request.get_ref().store_id))]
    async fn remove_preferred_store(
        &self,
        request: Request<pb::RemovePreferredStoreRequest>,
    ) -> Result<Response<pb::RemovePreferredStoreResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::RemovePreferredStoreRequest { store_id, request_id } = request.into_inner();
        let mut v = Violations::new();
        v.check_id("store_id", &store_id);
        v.check_request_id("request_id", &request_id);
        v.into_result(()).map_err(Error::from)?;
        let removed = self.app.remove_preferred_store(&customer_id, &store_id).await?;
        tracing::info!(%request_id, removed, "preferred store removed");
        Ok(Response::new(pb::RemovePreferredStoreResponse { removed }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_preferred_stores(
        &self,
        request: Request<pb::ListPreferredStoresRequest>,
    ) -> Result<Response<pb::ListPreferredStoresResponse>, Status> {
        let customer_id = self.customer(&request)?;
        let pb::ListPreferredStoresRequest { page_size, page_token } = request.into_inner();
        let mut v = Violations::new();
        let page = PageRequest::parse(page_size, &page_token, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (stores, next_page_token) = self.app.preferred_stores(&customer_id, &page).await?;
        Ok(Response::new(pb::ListPreferredStoresResponse {
            preferred_stores: stores.iter().map(convert::preferred_store).collect(),
            next_page_token,
        }))
    }
}
