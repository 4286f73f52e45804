//! Traces leave a real service binary over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set: payment runs as a process, a Charge
//! arrives with the caller's traceparent, and an OTLP trace receiver on
//! loopback (this test) gets payment's span of it, in the caller's trace and
//! under payment's service name, even with RUST_LOG=warn.

use std::{process::Stdio, time::Duration};

use foodmesh_e2e::processes::binary;
use foodmesh_platform::testing::{
    NatsServer, TestDatabases, TestKeys, authed, backend_from_env, eventually, free_port, service_env,
};
use foodmesh_proto::{
    common::v1::Money,
    payment::v1::{ChargeRequest, payment_service_client::PaymentServiceClient},
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

/// An OTLP trace receiver: hands every export request to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(&self, request: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// (service.name, span name, trace id hex) of every span received so far.
fn spans(requests: &[ExportTraceServiceRequest]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for request in requests {
        for resource in &request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope in &resource.scope_spans {
                for span in &scope.spans {
                    let trace: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    out.push((service.clone(), span.name.clone(), trace));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_exports_its_spans_over_otlp_in_the_callers_trace() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let otlp_port = free_port();
    let receiver = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve(([127, 0, 0, 1], otlp_port).into()),
    );

    let nats = NatsServer::start().await;
    let dbs = TestDatabases::new(backend_from_env());
    let keys = TestKeys::new();
    let port = free_port();
    let mut env = service_env(&dbs.url("payment").await, &nats.url(), &keys);
    env.extend([
        ("FOODMESH_SERVER__LISTEN_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), format!("http://127.0.0.1:{otlp_port}")),
        // Export every 100 ms rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
        // Quiet logs must not switch traces off.
        ("RUST_LOG".to_owned(), "warn".to_owned()),
    ]);
    let log_dir = tempfile::tempdir().expect("temp dir");
    let log_path = log_dir.path().join("payment.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = tokio::process::Command::new(binary("payment"))
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("payment starts");

    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
    let payment = PaymentServiceClient::new(channel);
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let charge = ChargeRequest {
        request_id: "ord_otlp".into(),
        order_id: "ord_otlp".into(),
        amount: Some(Money { currency_code: "KRW".into(), amount_minor: 9000 }),
        payment_token: "tok_visa".into(),
    };
    let reply = eventually(Duration::from_secs(20), "payment to answer a traced Charge", || {
        let (mut payment, charge, trace) = (payment.clone(), charge.clone(), trace.clone());
        let token = keys.customer("dave");
        async move {
            let mut request = authed(charge, &token);
            request.metadata_mut().insert("traceparent", format!("00-{trace}-00f067aa0ba902b7-01").parse().ok()?);
            payment.charge(request).await.ok()
        }
    })
    .await;
    assert!(reply.into_inner().payment.is_some());

    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = spans(&received)
            .into_iter()
            .any(|(service, name, t)| service == "payment" && name == "foodmesh.payment.v1.PaymentService/Charge" && t == trace);
        if found {
            break;
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(remaining, rx.recv()).await {
            Ok(Some(request)) => received.push(request),
            _ => panic!(
                "no Charge span in trace {trace} over OTLP; received {:?}; payment's log:\n{}",
                spans(&received),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            ),
        }
    }
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().expect("pid").to_string()]).status();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait()).await.expect("payment stops").expect("exit status");
    assert!(status.success(), "payment exits cleanly after SIGTERM: {status}");
    receiver.abort();
}
