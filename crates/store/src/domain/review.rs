//! Customers' reviews of stores, and the stores they prefer.
//!
//! A customer reviews a store through one of their own orders, once it was
//! delivered: one review per order, so a store's rating counts real meals.

use foodmesh_platform::time::Timestamp;

use super::kitchen::{Status, StoreOrder};

/// A star rating, 1 to 5. Cannot hold another value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rating(u8);

impl Rating {
    /// The lowest rating.
    pub const MIN: u8 = 1;
    /// The highest rating.
    pub const MAX: u8 = 5;

    /// `Some` if `stars` is between [`Rating::MIN`] and [`Rating::MAX`].
    pub fn parse(stars: i64) -> Option<Rating> {
        u8::try_from(stars).ok().filter(|s| (Self::MIN..=Self::MAX).contains(s)).map(Rating)
    }

    /// The number of stars.
    pub fn stars(self) -> u8 {
        self.0
    }
}

/// What a customer writes: the rating and an optional comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewDraft {
    /// The stars.
    pub rating: Rating,
    /// The words; may be empty.
    pub comment: String,
}

/// A posted review.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Review {
    /// Its id.
    pub review_id: String,
    /// The order it was posted through.
    pub order_id: String,
    /// The store reviewed.
    pub store_id: String,
    /// Who wrote it.
    pub customer_id: String,
    /// The stars and the words.
    pub draft: ReviewDraft,
    /// The request that posted it; a retry of that request gets this review back.
    pub request_id: String,
    /// When it was posted.
    pub posted_at: Timestamp,
}

/// Why a review cannot be posted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The order has not been delivered (yet, or ever).
    #[error("only a delivered order can be reviewed")]
    NotDelivered(Status),
    /// The order already has a review, posted by another request.
    #[error("this order already has a review")]
    AlreadyReviewed,
    /// The same request id was used before for a different review.
    #[error("request_id was already used for a different review of this order")]
    RequestIdReused,
}

/// What posting a review comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Posting {
    /// A new review, to store and announce.
    New(Review),
    /// A retry of the request that posted `existing`: nothing to do.
    Repeat(Review),
}

/// Decides whether `customer_id`'s review of `order` can be posted, given the
/// review the order already has, if any. The caller has checked that the
/// order is the customer's own.
pub fn post(
    order: &StoreOrder,
    existing: Option<Review>,
    draft: ReviewDraft,
    request_id: &str,
    review_id: String,
    now: Timestamp,
) -> Result<Posting, ReviewError> {
    if let Some(existing) = existing {
        return if existing.request_id != request_id {
            Err(ReviewError::AlreadyReviewed)
        } else if existing.draft != draft {
            Err(ReviewError::RequestIdReused)
        } else {
            Ok(Posting::Repeat(existing))
        };
    }
    if order.status != Status::Delivered {
        return Err(ReviewError::NotDelivered(order.status));
    }
    Ok(Posting::New(Review {
        review_id,
        order_id: order.order_id.clone(),
        store_id: order.store_id.clone(),
        customer_id: order.customer_id.clone(),
        draft,
        request_id: request_id.to_owned(),
        posted_at: now,
    }))
}

/// A store's rating over all of its reviews.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatingSummary {
    /// How many reviews.
    pub count: i64,
    /// The sum of their stars.
    pub stars: i64,
}

impl RatingSummary {
    /// The mean rating, or 0 when there is no review.
    pub fn average(self) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        // Exact: counts and sums of stars stay far below 2^53.
        let (stars, count) = (self.stars as f64, self.count as f64);
        stars / count
    }
}

/// A store a customer registered as preferred.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreferredStore {
    /// The store.
    pub store: super::catalog::Store,
    /// When the customer registered it.
    pub added_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use foodmesh_platform::money::{Currency, Money};

    use super::*;
    use crate::domain::kitchen::{Line, PlacedOrder};

    fn order(status: Status) -> StoreOrder {
        let placed = PlacedOrder {
            order_id: "ord_1".into(),
            store_id: "seoul-bbq".into(),
            customer_id: "alice".into(),
            lines: vec![Line { menu_item_id: "bulgogi".into(), name: "Bulgogi".into(), quantity: 1 }],
            total: Money::new(Currency::KRW, 18_000).expect("valid"),
            delivery_address: "1 Main St".into(),
        };
        let (mut order, _) = StoreOrder::receive(placed, Timestamp::from_micros(1));
        order.status = status;
        order
    }

    fn draft(stars: i64, comment: &str) -> ReviewDraft {
        ReviewDraft { rating: Rating::parse(stars).expect("valid rating"), comment: comment.into() }
    }

    fn post_new(order: &StoreOrder, request_id: &str) -> Review {
        match post(order, None, draft(5, "great"), request_id, "rev_1".into(), Timestamp::from_micros(9)) {
            Ok(Posting::New(review)) => review,
            other => panic!("expected a new review, got {other:?}"),
        }
    }

    #[test]
    fn ratings_are_one_to_five_stars() {
        assert_eq!(Rating::parse(1).map(Rating::stars), Some(1));
        assert_eq!(Rating::parse(5).map(Rating::stars), Some(5));
        for bad in [0, 6, -1, 256, i64::MAX] {
            assert_eq!(Rating::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn only_a_delivered_order_can_be_reviewed() {
        for status in [Status::Received, Status::Cooking, Status::Delivering, Status::Cancelled, Status::Rejected] {
            let result = post(&order(status), None, draft(4, ""), "r1", "rev_1".into(), Timestamp::from_micros(9));
            assert_eq!(result, Err(ReviewError::NotDelivered(status)));
        }
        let review = post_new(&order(Status::Delivered), "r1");
        assert_eq!((review.store_id.as_str(), review.customer_id.as_str()), ("seoul-bbq", "alice"));
        assert_eq!(review.draft, draft(5, "great"));
    }

    #[test]
    fn a_retry_gets_the_same_review_and_another_request_is_refused() {
        let delivered = order(Status::Delivered);
        let first = post_new(&delivered, "r1");
        let again = post(&delivered, Some(first.clone()), draft(5, "great"), "r1", "rev_2".into(), Timestamp::from_micros(10));
        assert_eq!(again, Ok(Posting::Repeat(first.clone())));
        let other = post(&delivered, Some(first.clone()), draft(1, "bad"), "r2", "rev_3".into(), Timestamp::from_micros(10));
        assert_eq!(other, Err(ReviewError::AlreadyReviewed));
        let changed = post(&delivered, Some(first), draft(1, "bad"), "r1", "rev_4".into(), Timestamp::from_micros(10));
        assert_eq!(changed, Err(ReviewError::RequestIdReused));
    }

    #[test]
    fn the_average_is_the_mean_of_the_stars_and_zero_without_reviews() {
        assert!((RatingSummary { count: 3, stars: 13 }.average() - 13.0 / 3.0).abs() < 1e-12);
        assert!(RatingSummary { count: 0, stars: 0 }.average().abs() < f64::EPSILON);
    }
}
