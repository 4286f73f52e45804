//! `foodmesh-payment`: the payment service binary.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    foodmesh_platform::lifecycle::main("payment", foodmesh_payment::Settings::load(), foodmesh_payment::start).await
}
