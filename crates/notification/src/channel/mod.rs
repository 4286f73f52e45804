//! Where messages go out: the service log, or an HTTP webhook (a
//! messenger-style API such as a KakaoTalk alert endpoint).

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{db, domain::Notification};

/// A way to reach customers.
pub trait Channel: Send + Sync + 'static {
    /// Its name, stored with each message.
    fn name(&self) -> &'static str;
    /// Sends one message. An error means it should be tried again later.
    fn send<'a>(&'a self, notification: &'a Notification) -> BoxFuture<'a, Result<(), String>>;
}

/// Writes each message to the service log.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogChannel;

impl Channel for LogChannel {
    fn name(&self) -> &'static str {
        "log"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        tracing::info!(
            target: "foodmesh::notification::sent",
            customer_id = %n.customer_id,
            order_id = %n.order_id,
            kind = db::kind_name(n.kind),
            title = %n.title,
            "{}",
            n.body
        );
        Box::pin(std::future::ready(Ok(())))
    }
}

/// POSTs each message as JSON to a URL. Any 2xx answer is a success; the
/// `Idempotency-Key` header (the notification id) lets the receiver drop the
/// duplicate a retry after a lost answer would cause.
#[derive(Debug, Clone)]
pub struct WebhookChannel {
    client: Client<HttpConnector, Full<Bytes>>,
    url: http::Uri,
    timeout: Duration,
}

impl WebhookChannel {
    /// A webhook channel to `url` (http only: TLS is the mesh's job).
    pub fn new(url: &str, timeout: Duration) -> Result<Self, String> {
        let url: http::Uri = url.parse().map_err(|e| format!("invalid webhook_url {url:?}: {e}"))?;
        if url.scheme_str() != Some("http") {
            return Err(format!("webhook_url must be http://, got {url}"));
        }
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        Ok(Self { client: Client::builder(TokioExecutor::new()).build(connector), url, timeout })
    }
}

impl Channel for WebhookChannel {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = serde_json::json!({
                "notification_id": n.notification_id,
                "customer_id": n.customer_id,
                "order_id": n.order_id,
                "kind": db::kind_name(n.kind),
                "title": n.title,
                "body": n.body,
                "occurred_at_micros": n.occurred_at.as_micros(),
            });
            let request = http::Request::post(self.url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header("idempotency-key", &n.notification_id)
                .body(Full::new(Bytes::from(body.to_string())))
                .map_err(|e| e.to_string())?;
            let response = tokio::time::timeout(self.timeout, self.client.request(request))
                .await
                .map_err(|_| format!("no answer within {:?}", self.timeout))?
                .map_err(|e| format!("request failed: {e}"))?;
            let status = response.status();
            // Read the body so the connection can be reused.
            let _ = tokio::time::timeout(self.timeout, response.into_body().collect()).await;
            if status.is_success() { Ok(()) } else { Err(format!("webhook answered {status}")) }
        })
    }
}
