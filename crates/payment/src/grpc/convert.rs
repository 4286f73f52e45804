//! Requests into commands (collecting every bad field), payments into messages.

use std::time::Duration;

use foodmesh_platform::{convert, validation::Violations};
use foodmesh_proto::payment::v1 as pb;

use crate::{
    app::{Error, FaultSettings, Lookup},
    domain::{ChargeCommand, Payment, PaymentStatus},
};

pub(super) fn charge_command(request: pb::ChargeRequest, customer_id: &str) -> Result<ChargeCommand, Error> {
    let pb::ChargeRequest { request_id, order_id, amount, payment_token } = request;
    let mut v = Violations::new();
    v.check_request_id("request_id", &request_id);
    v.check_request_id("order_id", &order_id);
    let amount = convert::money_field(amount.as_ref(), "amount", &mut v);
    if amount.is_some_and(|a| a.amount_minor() == 0) {
        v.add("amount.amount_minor", "must be positive");
    }
    v.check_text("payment_token", &payment_token, 1, 64);
    let amount = v.clone().into_result(amount)?.ok_or(Error::Invalid(v))?;
    Ok(ChargeCommand { idempotency_key: request_id, order_id, customer_id: customer_id.to_owned(), amount, payment_token })
}

pub(super) fn refund(request: pb::RefundRequest) -> Result<(String, String), Error> {
    let pb::RefundRequest { request_id, payment_id, reason } = request;
    let mut v = Violations::new();
    v.check_request_id("request_id", &request_id);
    v.check_id("payment_id", &payment_id);
    v.check_text("reason", &reason, 1, 200);
    Ok(v.into_result((payment_id, reason))?)
}

pub(super) fn lookup(request: pb::GetPaymentRequest) -> Result<Lookup, Error> {
    let mut v = Violations::new();
    let lookup = match request.lookup {
        Some(pb::get_payment_request::Lookup::PaymentId(id)) => {
            v.check_id("payment_id", &id);
            Lookup::PaymentId(id)
        }
        Some(pb::get_payment_request::Lookup::OrderId(id)) => {
            v.check_request_id("order_id", &id);
            Lookup::OrderId(id)
        }
        None => {
            v.add("lookup", "set payment_id or order_id");
            Lookup::PaymentId(String::new())
        }
    };
    Ok(v.into_result(lookup)?)
}

pub(super) fn payment(p: &Payment) -> pb::Payment {
    pb::Payment {
        payment_id: p.id.to_string(),
        order_id: p.order_id.clone(),
        customer_id: p.customer_id.clone(),
        amount: Some(convert::money(p.amount)),
        status: match p.status {
            PaymentStatus::Captured => pb::PaymentStatus::Captured,
            PaymentStatus::Declined => pb::PaymentStatus::Declined,
            PaymentStatus::Refunded => pb::PaymentStatus::Refunded,
        }
        .into(),
        created_at: Some(convert::timestamp(p.created_at)),
        refunded_at: p.refunded_at.map(convert::timestamp),
        refund_reason: p.refund_reason.clone(),
        decline_reason: p.decline_reason.clone(),
    }
}

pub(super) fn faults(faults: Option<pb::Faults>, request_id: &str) -> Result<FaultSettings, Error> {
    let f = faults.unwrap_or_default();
    let settings = FaultSettings {
        latency_min: Duration::from_millis(f.latency_min_ms.into()),
        latency_max: Duration::from_millis(f.latency_max_ms.into()),
        failure_rate: f.failure_rate,
        max_concurrent_charges: f.max_concurrent_charges,
    };
    let mut v = Violations::new();
    v.check_request_id("request_id", request_id);
    if let Err(bad) = settings.validate("faults.") {
        for violation in bad.iter() {
            v.add(violation.field.clone(), violation.description.clone());
        }
    }
    Ok(v.into_result(settings)?)
}

pub(super) fn faults_message(settings: &FaultSettings) -> pb::Faults {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    pb::Faults {
        latency_min_ms: ms(settings.latency_min),
        latency_max_ms: ms(settings.latency_max),
        failure_rate: settings.failure_rate,
        max_concurrent_charges: settings.max_concurrent_charges,
    }
}
