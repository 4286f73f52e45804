//! The outbound adapter to the payment service: a gRPC client with a deadline
//! that never outlives the caller's own.

use std::time::{Duration, Instant};

use foodmesh_platform::convert;
use foodmesh_proto::payment::v1::{ChargeRequest as PbCharge, payment_service_client::PaymentServiceClient};
use futures::future::BoxFuture;
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

use crate::app::{ChargeOutcome, ChargeRequest, GatewayError, PaymentGateway};

/// Payment over gRPC.
#[derive(Debug, Clone)]
pub struct GrpcPaymentGateway {
    client: PaymentServiceClient<Channel>,
    timeout: Duration,
}

impl GrpcPaymentGateway {
    /// A client of the payment service at `url`; it connects on first use and
    /// reconnects by itself.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .connect_lazy();
        Ok(Self { client: PaymentServiceClient::new(channel), timeout })
    }
}

impl PaymentGateway for GrpcPaymentGateway {
    fn charge<'a>(&'a self, request: ChargeRequest<'a>) -> BoxFuture<'a, Result<ChargeOutcome, GatewayError>> {
        Box::pin(async move {
            let timeout = match request.deadline {
                Some(deadline) => self.timeout.min(deadline.saturating_duration_since(Instant::now())),
                None => self.timeout,
            };
            if timeout < Duration::from_millis(5) {
                return Err(GatewayError::Unavailable("no time left before the caller's deadline".into()));
            }
            let mut call = tonic::Request::new(PbCharge {
                request_id: request.order_id.to_string(),
                order_id: request.order_id.to_string(),
                amount: Some(convert::money(request.amount)),
                payment_token: request.payment_token.to_owned(),
            });
            // Sent as grpc-timeout, so payment gives up when we do.
            call.set_timeout(timeout);
            let authorization =
                request.credentials.0.parse().map_err(|_| GatewayError::Refused("credentials are not ASCII".into()))?;
            call.metadata_mut().insert("authorization", authorization);
            let mut client = self.client.clone();
            match tokio::time::timeout(timeout, client.charge(call)).await {
                Err(_) => Err(GatewayError::Unavailable(format!("no answer within {timeout:?}"))),
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
                        Code::Unavailable
                        | Code::DeadlineExceeded
                        | Code::ResourceExhausted
                        | Code::Cancelled
                        | Code::Aborted => Err(GatewayError::Unavailable(format!("{:?}: {}", status.code(), status.message()))),
                        // Payment answers every error with an ErrorInfo. Without
                        // one, the answer never came: the connection broke
                        // mid-call (payment died, a proxy reset it). The charge
                        // may or may not have happened; a retry with the same
                        // key settles it, so this is "try again", not a failure.
                        Code::Unknown | Code::Internal if info.is_none() => {
                            Err(GatewayError::Unavailable(format!("no answer: {}", status.message())))
                        }
                        _ => Err(GatewayError::Refused(format!("{:?} {reason}: {}", status.code(), status.message()))),
                    }
                }
            }
        })
    }
}
