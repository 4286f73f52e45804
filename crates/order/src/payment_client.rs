//! The outbound adapter to the payment service: a tower stack around the gRPC
//! client. From the outside in:
//!
//! 1. a concurrency limit with load shedding: at most `max_in_flight`
//!    charges at payment; one more waits up to `max_wait` for a slot (a
//!    burst), then is refused instead of queueing behind calls that are
//!    already slow (an overload);
//! 2. a circuit breaker: after consecutive failures it refuses at once for a
//!    cool-down, then lets one probe through;
//! 3. the call itself, with a deadline from config that never outlives the
//!    caller's own (sent on as grpc-timeout, so payment gives up too).
//!
//! A refusal by 1 or 2 costs the customer a few milliseconds and an
//! UNAVAILABLE with a retry delay; a hang would cost them the whole deadline
//! and keep payment from recovering.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use foodmesh_platform::{
    breaker::{self, Breaker, BreakerLayer, BreakerSettings},
    convert,
    shed::{Overloaded, ShedLayer},
};
use foodmesh_proto::payment::v1::{ChargeRequest as PbCharge, payment_service_client::PaymentServiceClient};
use futures::future::BoxFuture;
use tonic::{
    Code,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;
use tower::{BoxError, ServiceBuilder, ServiceExt, util::BoxCloneSyncService};

use crate::app::{ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway, PaymentLoad};

/// How order protects itself from a slow or failing payment service.
#[derive(Debug, Clone, Copy)]
pub struct Protection {
    /// The longest a charge may take (the caller's own deadline may be shorter).
    pub timeout: Duration,
    /// Charges in flight at once; beyond, calls are shed. 0: no limit.
    pub max_in_flight: usize,
    /// How long a call waits for a free slot before it is shed.
    pub max_wait: Duration,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
}

/// One charge, owned, as it travels down the stack.
#[derive(Debug)]
struct Call {
    request: PbCharge,
    authorization: MetadataValue<tonic::metadata::Ascii>,
    timeout: Duration,
}

/// Payment over gRPC, behind the protection stack.
#[derive(Clone)]
pub struct GrpcPaymentGateway {
    stack: BoxCloneSyncService<Call, ChargeOutcome, BoxError>,
    breaker: Arc<Breaker>,
    shed: Option<ShedLayer>,
    protection: Protection,
}

impl std::fmt::Debug for GrpcPaymentGateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcPaymentGateway").field("protection", &self.protection).finish_non_exhaustive()
    }
}

/// A timeout or an UNAVAILABLE counts against payment; a decline or a refusal
/// is payment answering, which is health.
fn failed(result: &Result<ChargeOutcome, GatewayError>) -> bool {
    matches!(result, Err(GatewayError::Unavailable { .. }))
}

impl GrpcPaymentGateway {
    /// A client of the payment service at `url`; it connects on first use and
    /// reconnects by itself.
    pub fn new(url: &str, protection: Protection) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_lazy();
        let client = PaymentServiceClient::new(channel);
        let breaker = Breaker::new("payment", protection.breaker);
        let shed = (protection.max_in_flight > 0).then(|| ShedLayer::new(protection.max_in_flight, protection.max_wait));
        let call = tower::service_fn(move |call: Call| charge(client.clone(), call));
        let stack =
            ServiceBuilder::new().option_layer(shed.clone()).layer(BreakerLayer::new(breaker.clone(), failed)).service(call);
        Ok(Self { stack: BoxCloneSyncService::new(stack.map_err(BoxError::from)), breaker, shed, protection })
    }

    fn in_flight(&self) -> usize {
        self.shed.as_ref().map_or(0, ShedLayer::in_flight)
    }
}

/// The retry delay given to a shed call: the in-flight charges will have
/// answered or timed out by then.
const SHED_RETRY_AFTER: Duration = Duration::from_millis(250);

impl PaymentGateway for GrpcPaymentGateway {
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let timeout = match request.deadline {
                Some(deadline) => self.protection.timeout.min(deadline.saturating_duration_since(Instant::now())),
                None => self.protection.timeout,
            };
            if timeout < Duration::from_millis(5) {
                return Err(GatewayError::unavailable("no time left before the caller's deadline"));
            }
            let authorization =
                request.credentials.0.parse().map_err(|_| GatewayError::Refused("credentials are not ASCII".into()))?;
            let call = Call {
                request: PbCharge {
                    request_id: request.order_id.to_string(),
                    order_id: request.order_id.to_string(),
                    amount: Some(convert::money(request.amount)),
                    payment_token: request.payment_token.to_owned(),
                },
                authorization,
                timeout,
            };
            match self.stack.clone().oneshot(call).await {
                Ok(outcome) => Ok(outcome),
                Err(err) => Err(match err.downcast::<GatewayError>() {
                    Ok(gateway) => *gateway,
                    Err(err) => match err.downcast::<breaker::Open>() {
                        Ok(open) => GatewayError::Unavailable { why: open.to_string(), retry_after: Some(open.retry_after) },
                        Err(err) if err.is::<Overloaded>() => GatewayError::Unavailable {
                            why: format!("{} charges already in flight", self.protection.max_in_flight),
                            retry_after: Some(SHED_RETRY_AFTER),
                        },
                        Err(err) => GatewayError::unavailable(err.to_string()),
                    },
                }),
            }
        })
    }

    fn refuses_now(&self) -> Option<Duration> {
        // Only an open circuit is certain; a full limit may free a slot
        // within the wait.
        self.breaker.refuses_now()
    }

    fn load(&self) -> PaymentLoad {
        PaymentLoad {
            breaker: self.breaker.snapshot(),
            settings: self.breaker.settings(),
            in_flight: self.in_flight(),
            max_in_flight: self.protection.max_in_flight,
            shed_total: self.shed.as_ref().map_or(0, ShedLayer::shed_total),
        }
    }
}

/// One charge over gRPC.
async fn charge(mut client: PaymentServiceClient<Channel>, call: Call) -> Result<ChargeOutcome, GatewayError> {
    let Call { request, authorization, timeout } = call;
    let mut call = tonic::Request::new(request);
    // Sent as grpc-timeout, so payment gives up when we do.
    call.set_timeout(timeout);
    call.metadata_mut().insert("authorization", authorization);
    // The order's trace continues in payment (W3C traceparent).
    foodmesh_platform::telemetry::inject_metadata(call.metadata_mut());
    match tokio::time::timeout(timeout, client.charge(call)).await {
        Err(_) => Err(GatewayError::unavailable(format!("no answer within {timeout:?}"))),
        Ok(Ok(reply)) => {
            let payment = reply.into_inner().payment.ok_or_else(|| GatewayError::Refused("empty reply".into()))?;
            Ok(ChargeOutcome::Captured { payment_id: payment.payment_id })
        }
        Ok(Err(status)) => {
            let info = status.get_details_error_info();
            let reason = info.as_ref().map_or("", |i| i.reason.as_str());
            match status.code() {
                Code::FailedPrecondition if reason == "PAYMENT_DECLINED" => {
                    let why = info.as_ref().and_then(|i| i.metadata.get("decline_reason")).cloned();
                    let why = why.unwrap_or_else(|| status.message().to_owned());
                    Ok(ChargeOutcome::Declined { reason: why })
                }
                Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted | Code::Cancelled | Code::Aborted => {
                    Err(GatewayError::unavailable(format!("{:?}: {}", status.code(), status.message())))
                }
                // Payment answers every error with an ErrorInfo. Without
                // one, the answer never came: the connection broke
                // mid-call (payment died, a proxy reset it). The charge
                // may or may not have happened; a retry with the same
                // key settles it, so this is "try again", not a failure.
                Code::Unknown | Code::Internal if info.is_none() => {
                    Err(GatewayError::unavailable(format!("no answer: {}", status.message())))
                }
                _ => Err(GatewayError::Refused(format!("{:?} {reason}: {}", status.code(), status.message()))),
            }
        }
    }
}
