//! Prints the local Envoy configuration for a sample layout (for inspection:
//! `cargo run -p foodmesh-mesh --example render | envoy --mode validate -c /dev/stdin`).
#![allow(clippy::print_stdout, reason = "an example that prints")]

use std::collections::BTreeMap;

use foodmesh_mesh::{Endpoints, LocalMesh, envoy_config};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut endpoints = Endpoints::default();
    endpoints
        .add("order", "v1", "127.0.0.1:50061")
        .add("payment", "v1", "127.0.0.1:50062")
        .add("store", "v1", "127.0.0.1:50063")
        .add("notification", "v1", "127.0.0.1:50064");
    let mesh = LocalMesh {
        admin_port: 9901,
        gateway_port: 50051,
        payment_port: 50052,
        endpoints,
        weights: BTreeMap::new(),
        health_check_interval: Some(std::time::Duration::from_millis(200)),
    };
    println!("{}", serde_json::to_string_pretty(&envoy_config(&mesh)?)?);
    Ok(())
}
