//! Operator commands: payment's injected faults and order's payment circuit.

use std::time::Duration;

use anyhow::Result;
use foodmesh_platform::{auth::Principal, grpc::authed};
use foodmesh_proto::{
    order::v1::{
        CircuitState, GetPaymentCircuitRequest, GetPaymentCircuitResponse, circuit_service_client::CircuitServiceClient,
    },
    payment::v1::{Faults, GetFaultsRequest, SetFaultsRequest, fault_service_client::FaultServiceClient},
};
use tonic::transport::Channel;

use crate::home::{Home, ensure_loopback};

/// What to change in payment's faults; unset flags keep their current value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FaultArgs {
    /// Extra latency per charge, in ms: `500` or a range `400-620`.
    #[arg(long)]
    pub latency_ms: Option<String>,
    /// The share of charges answered UNAVAILABLE, 0.0 to 1.0.
    #[arg(long)]
    pub failure_rate: Option<f64>,
    /// Charges processed at once, the others waiting; 0 for no limit.
    #[arg(long)]
    pub max_concurrent: Option<u32>,
    /// Turn every fault off (then apply the other flags, if any).
    #[arg(long)]
    pub off: bool,
    /// The payment service's address, instead of the local mesh's.
    #[arg(long)]
    pub payment: Option<String>,
}

/// Parses `500` or `400-620` into (min, max) milliseconds.
pub fn latency_range(spec: &str) -> Result<(u32, u32)> {
    foodmesh_platform::config::millis_range(spec).ok_or_else(|| anyhow::anyhow!("--latency-ms {spec:?}: not a number of ms"))
}

impl FaultArgs {
    fn changes(&self) -> bool {
        self.off || self.latency_ms.is_some() || self.failure_rate.is_some() || self.max_concurrent.is_some()
    }

    /// `current` with these changes.
    pub fn apply(&self, current: Faults) -> Result<Faults> {
        let mut faults = if self.off { Faults::default() } else { current };
        if let Some(spec) = &self.latency_ms {
            (faults.latency_min_ms, faults.latency_max_ms) = latency_range(spec)?;
        }
        if let Some(rate) = self.failure_rate {
            faults.failure_rate = rate;
        }
        if let Some(max) = self.max_concurrent {
            faults.max_concurrent_charges = max;
        }
        Ok(faults)
    }
}

fn client(addr: &str) -> Result<Channel> {
    ensure_loopback(addr, "operator commands")?;
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(2)).connect_lazy())
}

fn operator(home: &Home) -> Result<String> {
    home.bearer(&Principal::Operator { operator_id: "cli".to_owned() })
}

/// Sets payment's faults on the service at `addr` and returns them.
pub async fn set_faults(home: &Home, addr: &str, faults: Faults) -> Result<Faults> {
    let mut payment = FaultServiceClient::new(client(addr)?);
    let request = SetFaultsRequest { request_id: uuid::Uuid::new_v4().to_string(), faults: Some(faults) };
    let reply = payment.set_faults(authed(request, &operator(home)?)).await?.into_inner();
    Ok(reply.faults.unwrap_or_default())
}

/// `foodmesh faults`: shows payment's faults, after changing them if asked.
pub async fn faults(home: &Home, args: &FaultArgs) -> Result<()> {
    let addr = match &args.payment {
        Some(addr) => addr.clone(),
        None => home.endpoints()?.payment,
    };
    let token = operator(home)?;
    let mut payment = FaultServiceClient::new(client(&addr)?);
    let current = payment.get_faults(authed(GetFaultsRequest {}, &token)).await?.into_inner();
    if args.changes() {
        let faults = set_faults(home, &addr, args.apply(current.faults.unwrap_or_default())?).await?;
        println!("payment faults set: {}", describe(&faults));
    } else {
        println!(
            "payment faults: {}\ncharges in flight: {}, waiting for a slot: {}",
            describe(&current.faults.unwrap_or_default()),
            current.charges_in_flight,
            current.charges_waiting
        );
    }
    Ok(())
}

fn describe(f: &Faults) -> String {
    let latency = match (f.latency_min_ms, f.latency_max_ms) {
        (0, 0) => "no extra latency".to_owned(),
        (low, high) if low == high => format!("+{low} ms per charge"),
        (low, high) => format!("+{low}-{high} ms per charge"),
    };
    let slots = match f.max_concurrent_charges {
        0 => "no concurrency limit".to_owned(),
        n => format!("at most {n} charges at once"),
    };
    format!("{latency}, {:.0}% refused, {slots}", f.failure_rate * 100.0)
}

/// Order's payment circuit at `addr`, as an operator sees it.
pub async fn payment_circuit(home: &Home, addr: &str) -> Result<GetPaymentCircuitResponse> {
    let mut client = CircuitServiceClient::new(client(addr)?);
    Ok(client.get_payment_circuit(authed(GetPaymentCircuitRequest {}, &operator(home)?)).await?.into_inner())
}

/// `foodmesh circuit`: order's circuit breaker in front of payment.
pub async fn circuit(home: &Home, order: Option<String>) -> Result<()> {
    let addr = match order {
        Some(addr) => addr,
        // Behind the local Envoy, the gateway does not route operator
        // services: ask order itself.
        None => {
            let e = home.endpoints()?;
            e.order_direct.unwrap_or(e.order)
        }
    };
    let c = payment_circuit(home, &addr).await?;
    let state = match c.state() {
        CircuitState::Closed => "CLOSED",
        CircuitState::Open => "OPEN",
        CircuitState::HalfOpen => "HALF_OPEN",
        CircuitState::Disabled => "DISABLED (breaker off)",
        CircuitState::Unspecified => "unknown",
    };
    println!("payment circuit at order {addr}: {state}");
    println!("  consecutive failures {} of {} (cool-down {} ms)", c.consecutive_failures, c.failure_threshold, c.cool_down_ms);
    println!("  charges in flight {} (limit {})", c.charges_in_flight, c.max_charges_in_flight);
    println!(
        "  opened {} times; refused while open {}; shed at the limit {}",
        c.opened_total, c.rejected_open_total, c.rejected_shed_total
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_change_only_what_they_name() {
        let current = Faults { latency_min_ms: 10, latency_max_ms: 20, failure_rate: 0.5, max_concurrent_charges: 4 };
        let args = FaultArgs { latency_ms: Some("400-620".into()), ..FaultArgs::default() };
        assert_eq!(
            args.apply(current).expect("valid"),
            Faults { latency_min_ms: 400, latency_max_ms: 620, failure_rate: 0.5, max_concurrent_charges: 4 }
        );
        let off = FaultArgs { off: true, max_concurrent: Some(8), ..FaultArgs::default() };
        assert_eq!(off.apply(current).expect("valid"), Faults { max_concurrent_charges: 8, ..Faults::default() });
        assert!(latency_range("fast").is_err());
        assert_eq!(latency_range("500").expect("fixed"), (500, 500));
    }
}
