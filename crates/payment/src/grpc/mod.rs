//! The gRPC adapter: identify the caller, convert the request, call the use
//! case, convert the answer. No business rule lives here.

use std::sync::Arc;

use foodmesh_platform::auth::Verifier;
use foodmesh_proto::payment::v1::{
    ChargeRequest, ChargeResponse, GetFaultsRequest, GetFaultsResponse, GetPaymentRequest, GetPaymentResponse, RefundRequest,
    RefundResponse, SetFaultsRequest, SetFaultsResponse, fault_service_server::FaultService,
    payment_service_server::PaymentService,
};
use tonic::{Request, Response, Status};

use crate::app::{Error, PaymentApp};

mod convert;
mod error;

/// The `foodmesh.payment.v1.PaymentService` implementation.
#[derive(Debug, Clone)]
pub struct PaymentGrpc {
    app: Arc<PaymentApp>,
    verifier: Verifier,
}

impl PaymentGrpc {
    /// The service over `app`, checking tokens with `verifier`.
    pub fn new(app: Arc<PaymentApp>, verifier: Verifier) -> Self {
        Self { app, verifier }
    }
}

#[tonic::async_trait]
impl PaymentService for PaymentGrpc {
    #[tracing::instrument(skip_all, fields(order_id = %request.get_ref().order_id))]
    async fn charge(&self, request: Request<ChargeRequest>) -> Result<Response<ChargeResponse>, Status> {
        let caller = self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let command = convert::charge_command(request.into_inner(), caller.customer().map_err(Error::from)?)?;
        let payment = self.app.charge(command).await?;
        Ok(Response::new(ChargeResponse { payment: Some(convert::payment(&payment)) }))
    }

    #[tracing::instrument(skip_all, fields(payment_id = %request.get_ref().payment_id))]
    async fn refund(&self, request: Request<RefundRequest>) -> Result<Response<RefundResponse>, Status> {
        let caller = self.verifier.verify(request.metadata()).map_err(Error::from)?;
        caller.operator().map_err(Error::from)?;
        let (payment_id, reason) = convert::refund(request.into_inner())?;
        let payment = self.app.refund(&payment_id, &reason).await?;
        Ok(Response::new(RefundResponse { payment: Some(convert::payment(&payment)) }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_payment(&self, request: Request<GetPaymentRequest>) -> Result<Response<GetPaymentResponse>, Status> {
        let caller = self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let lookup = convert::lookup(request.into_inner())?;
        let payment = self.app.get(&lookup, &caller).await?;
        Ok(Response::new(GetPaymentResponse { payment: Some(convert::payment(&payment)) }))
    }
}

#[tonic::async_trait]
impl FaultService for PaymentGrpc {
    async fn get_faults(&self, request: Request<GetFaultsRequest>) -> Result<Response<GetFaultsResponse>, Status> {
        self.verifier.verify(request.metadata()).map_err(Error::from)?.operator().map_err(Error::from)?;
        let faults = self.app.faults();
        let (in_flight, waiting) = faults.load();
        Ok(Response::new(GetFaultsResponse {
            faults: Some(convert::faults_message(&faults.settings())),
            charges_in_flight: in_flight,
            charges_waiting: waiting,
        }))
    }

    async fn set_faults(&self, request: Request<SetFaultsRequest>) -> Result<Response<SetFaultsResponse>, Status> {
        let caller = self.verifier.verify(request.metadata()).map_err(Error::from)?;
        let operator = caller.operator().map_err(Error::from)?.to_owned();
        let SetFaultsRequest { request_id, faults } = request.into_inner();
        let settings = convert::faults(faults, &request_id)?;
        tracing::warn!(%operator, %request_id, "an operator changed the payment faults");
        self.app.faults().set(settings);
        Ok(Response::new(SetFaultsResponse { faults: Some(convert::faults_message(&settings)) }))
    }
}
