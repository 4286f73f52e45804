//! A local HTTP endpoint standing in for a messenger API: it records every
//! call and can be told to refuse the first ones.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One call the webhook received.
#[derive(Debug, Clone)]
pub struct Call {
    /// The `idempotency-key` header.
    pub idempotency_key: String,
    /// The JSON body.
    pub body: String,
    /// Whether it was answered 200 (else 503).
    pub accepted: bool,
}

/// A webhook on a free loopback port.
#[derive(Debug, Clone)]
pub struct Webhook {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Webhook {
    /// Starts it; the first `refuse_first` calls are answered 503.
    pub async fn start(refuse_first: usize) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let refusals = Arc::new(AtomicUsize::new(refuse_first));
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (calls, refusals) = (recorded.clone(), refusals.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let (calls, refusals) = (calls.clone(), refusals.clone());
                        async move {
                            let key = request
                                .headers()
                                .get("idempotency-key")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let accepted =
                                refusals.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err();
                            calls.lock().expect("not poisoned").push(Call {
                                idempotency_key: key,
                                body: String::from_utf8_lossy(&body).into_owned(),
                                accepted,
                            });
                            let status = if accepted { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                            Ok::<_, std::convert::Infallible>(
                                Response::builder().status(status).body(Full::new(Bytes::new())).expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Webhook { addr, calls }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/notify", self.addr)
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }
}
