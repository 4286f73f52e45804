//! The local service mesh: an Envoy configuration rendered from the Istio
//! resources in `istio/`, so that `foodmesh up --mesh`, the mesh tests and
//! the mesh benchmark run with exactly the retries, timeouts, circuit
//! breakers, outlier detection and weights that Kubernetes gets. The YAML is
//! compiled in; there is no second copy of any number.
//!
//! The translation follows what Istio's control plane generates for a
//! sidecar: one Envoy cluster per (service, subset) carrying the
//! DestinationRule's traffic policy, and one route per VirtualService HTTP
//! route, first match wins.
//!
//! Local topology, one Envoy process:
//! - the *gateway* listener routes external gRPC by `gateway.yaml` to order,
//!   store and notification (the ingress gateway's role);
//! - the *payment* listener routes order's calls to payment by `payment.yaml`
//!   (the role of order's sidecar).
#![forbid(unsafe_code)]

pub mod process;

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

/// The Istio resources, as shipped.
pub mod sources {
    /// The ingress Gateway and its VirtualService.
    pub const GATEWAY: &str = include_str!("../../../istio/gateway.yaml");
    /// Payment's VirtualService and DestinationRule.
    pub const PAYMENT: &str = include_str!("../../../istio/payment.yaml");
    /// Order's.
    pub const ORDER: &str = include_str!("../../../istio/order.yaml");
    /// Store's.
    pub const STORE: &str = include_str!("../../../istio/store.yaml");
    /// Notification's.
    pub const NOTIFICATION: &str = include_str!("../../../istio/notification.yaml");
}

/// Why the resources could not be turned into an Envoy configuration.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// A YAML document did not parse.
    #[error("istio/{file}: {source}")]
    Yaml {
        /// The file.
        file: &'static str,
        /// The parse error.
        source: serde_norway::Error,
    },
    /// Something the translation needs is missing or malformed.
    #[error("{0}")]
    Invalid(String),
}

// ---- The subset of the Istio API the translation reads. --------------------

#[derive(Debug, Clone, Deserialize)]
struct Object {
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: serde_norway::Value,
}

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    name: String,
}

/// A VirtualService's spec.
#[derive(Debug, Clone, Deserialize)]
pub struct VirtualService {
    /// Its HTTP routes, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
}

/// One HTTP route.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpRoute {
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Any of these matches selects it.
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatch>,
    /// Where it goes, with weights.
    pub route: Vec<RouteDestination>,
    /// The whole request's timeout; `0s` for none.
    pub timeout: Option<String>,
    /// Retries.
    pub retries: Option<Retries>,
}

/// A match on the request path.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpMatch {
    /// The path condition.
    pub uri: UriMatch,
}

/// Exact path or prefix.
#[derive(Debug, Clone, Deserialize)]
pub struct UriMatch {
    /// The whole path.
    pub exact: Option<String>,
    /// A prefix of it.
    pub prefix: Option<String>,
}

/// One weighted destination.
#[derive(Debug, Clone, Deserialize)]
pub struct RouteDestination {
    /// Host and subset.
    pub destination: Destination,
    /// Its share, out of 100.
    pub weight: Option<u32>,
}

/// A service's subset.
#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    /// The Kubernetes host, e.g. `payment.foodmesh.svc.cluster.local`.
    pub host: String,
    /// The subset, e.g. `v1`.
    pub subset: Option<String>,
}

/// A route's retry policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first try.
    pub attempts: u32,
    /// Each try's timeout.
    pub per_try_timeout: Option<String>,
    /// The conditions, comma-separated.
    pub retry_on: Option<String>,
}

/// A DestinationRule's spec.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationRule {
    /// The host it applies to.
    pub host: String,
    /// Connection pool and outlier detection.
    pub traffic_policy: TrafficPolicy,
    /// Named subsets.
    #[serde(default)]
    pub subsets: Vec<Subset>,
}

/// Connection pool limits and outlier detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrafficPolicy {
    /// Limits.
    pub connection_pool: ConnectionPool,
    /// Ejection of failing replicas.
    pub outlier_detection: OutlierDetection,
}

/// Connection pool limits.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectionPool {
    /// TCP limits.
    pub tcp: TcpPool,
    /// HTTP limits.
    pub http: HttpPool,
}

/// TCP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TcpPool {
    /// Connections to the service.
    pub max_connections: u32,
    /// How long a connect may take.
    pub connect_timeout: String,
}

/// HTTP limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpPool {
    /// Requests in flight (Envoy's `max_requests`).
    pub http2_max_requests: u32,
    /// Requests waiting for a connection (`max_pending_requests`).
    pub http1_max_pending_requests: u32,
    /// Retries in flight (`max_retries`).
    pub max_retries: u32,
}

/// Outlier detection.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// 5xx (and gRPC errors mapped to 5xx) in a row that eject.
    pub consecutive5xx_errors: Option<u32>,
    /// 502/503/504 in a row that eject.
    pub consecutive_gateway_errors: Option<u32>,
    /// How often ejection is evaluated.
    pub interval: String,
    /// The first ejection's length.
    pub base_ejection_time: String,
    /// The most of a cluster ejected at once, percent.
    pub max_ejection_percent: u32,
}

/// A named subset.
#[derive(Debug, Clone, Deserialize)]
pub struct Subset {
    /// Its name.
    pub name: String,
}

// ---- Durations as Istio writes them. ---------------------------------------

/// Parses `"2500ms"`, `"1s"`, `"0s"`, `"1.5s"`, `"2m"`.
pub fn duration(text: &str) -> Result<Duration, MeshError> {
    let bad = || MeshError::Invalid(format!("not a duration: {text:?}"));
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => return Err(bad()),
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

/// Envoy's JSON form of a duration.
fn envoy_duration(d: Duration) -> String {
    format!("{}.{:03}s", d.as_secs(), d.subsec_millis())
}

// ---- The policy. -----------------------------------------------------------

/// The resources of one file.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// VirtualServices by name.
    pub virtual_services: BTreeMap<String, VirtualService>,
    /// DestinationRules by name.
    pub destination_rules: BTreeMap<String, DestinationRule>,
}

/// Parses the VirtualServices and DestinationRules of a YAML stream.
pub fn parse(file: &'static str, text: &str) -> Result<Resources, MeshError> {
    let mut resources = Resources::default();
    for document in serde_norway::Deserializer::from_str(text) {
        let object = Object::deserialize(document).map_err(|source| MeshError::Yaml { file, source })?;
        let spec = object.spec;
        match object.kind.as_str() {
            "VirtualService" => {
                let vs = serde_norway::from_value(spec).map_err(|source| MeshError::Yaml { file, source })?;
                resources.virtual_services.insert(object.metadata.name, vs);
            }
            "DestinationRule" => {
                let dr = serde_norway::from_value(spec).map_err(|source| MeshError::Yaml { file, source })?;
                resources.destination_rules.insert(object.metadata.name, dr);
            }
            _ => {}
        }
    }
    Ok(resources)
}

/// The service a Kubernetes host names: `payment.foodmesh.svc.cluster.local` is `payment`.
fn service_of(host: &str) -> &str {
    host.split('.').next().unwrap_or(host)
}

/// Where the local processes listen, by service and subset.
#[derive(Debug, Clone, Default)]
pub struct Endpoints {
    /// `(service, subset)` to `host:port` addresses.
    pub by_subset: BTreeMap<(String, String), Vec<String>>,
}

impl Endpoints {
    /// Adds `addr` to a subset.
    pub fn add(&mut self, service: &str, subset: &str, addr: impl Into<String>) -> &mut Self {
        self.by_subset.entry((service.to_owned(), subset.to_owned())).or_default().push(addr.into());
        self
    }
}

/// The local mesh's settings.
#[derive(Debug, Clone)]
pub struct LocalMesh {
    /// Envoy's admin interface (stats, clusters), loopback.
    pub admin_port: u16,
    /// The gateway listener (external gRPC).
    pub gateway_port: u16,
    /// The listener order calls payment through.
    pub payment_port: u16,
    /// The services' processes.
    pub endpoints: Endpoints,
    /// Weight overrides for canary tests: service to (v1, v2).
    pub weights: BTreeMap<String, (u32, u32)>,
    /// Ask every endpoint's gRPC health this often, and route only to those
    /// that answer SERVING. In Kubernetes the readiness probe and the
    /// endpoints controller do this for Istio (a NOT_SERVING or terminating
    /// pod leaves the endpoints); with static local endpoints, Envoy's active
    /// health check stands in for them. `None`: every endpoint always gets
    /// traffic.
    pub health_check_interval: Option<Duration>,
}

/// All routes and clusters: the Envoy bootstrap, as JSON.
pub fn envoy_config(mesh: &LocalMesh) -> Result<Value, MeshError> {
    let gateway = parse("gateway.yaml", sources::GATEWAY)?;
    let mut rules = BTreeMap::new();
    let mut payment_vs = None;
    for (file, text) in [
        ("payment.yaml", sources::PAYMENT),
        ("order.yaml", sources::ORDER),
        ("store.yaml", sources::STORE),
        ("notification.yaml", sources::NOTIFICATION),
    ] {
        let resources = parse(file, text)?;
        for dr in resources.destination_rules.into_values() {
            rules.insert(service_of(&dr.host).to_owned(), dr);
        }
        if file == "payment.yaml" {
            payment_vs = resources.virtual_services.get("payment").cloned();
        }
    }
    let gateway_vs = gateway
        .virtual_services
        .get("foodmesh-gateway")
        .ok_or_else(|| MeshError::Invalid("gateway.yaml has no VirtualService foodmesh-gateway".into()))?;
    let payment_vs = payment_vs.ok_or_else(|| MeshError::Invalid("payment.yaml has no VirtualService payment".into()))?;

    let mut clusters = Vec::new();
    for ((service, subset), addrs) in &mesh.endpoints.by_subset {
        let rule = rules.get(service).ok_or_else(|| MeshError::Invalid(format!("no DestinationRule for {service}")))?;
        if !rule.subsets.iter().any(|s| &s.name == subset) {
            return Err(MeshError::Invalid(format!("{service} has no subset {subset}")));
        }
        let mut cluster = cluster(&format!("{service}-{subset}"), addrs, &rule.traffic_policy)?;
        if let Some(interval) = mesh.health_check_interval {
            cluster["health_checks"] = health_check(interval);
        }
        clusters.push(cluster);
    }
    let listeners = vec![
        listener("gateway", mesh.gateway_port, &route_config("gateway", gateway_vs, mesh)?),
        listener("payment", mesh.payment_port, &route_config("payment", &payment_vs, mesh)?),
    ];
    Ok(json!({
        "admin": {"address": socket(mesh.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }))
}

/// gRPC health (the empty service name, which every service's readiness
/// follows): one NOT_SERVING or failed check takes the endpoint out, one
/// SERVING brings it back, as a readiness probe with thresholds of one.
fn health_check(interval: Duration) -> Value {
    json!([{
        "timeout": envoy_duration(interval.max(Duration::from_millis(500))),
        "interval": envoy_duration(interval),
        // Without traffic Envoy would otherwise check only every 60 s.
        "no_traffic_interval": envoy_duration(interval),
        "unhealthy_threshold": 1,
        "healthy_threshold": 1,
        "grpc_health_check": {},
    }])
}

fn socket(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

/// One Envoy cluster per subset, with the DestinationRule's policy, as Istio
/// renders it: connectionPool to circuit_breakers, outlierDetection with its
/// enforcing percentages at 100 (Envoy's default for gateway failures is 0,
/// which would count them and never eject).
fn cluster(name: &str, addrs: &[String], policy: &TrafficPolicy) -> Result<Value, MeshError> {
    let pool = &policy.connection_pool;
    let od = &policy.outlier_detection;
    let endpoints: Vec<Value> = addrs
        .iter()
        .map(|addr| {
            let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
            json!({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port.parse::<u16>().unwrap_or(0)}}}})
        })
        .collect();
    let mut outlier = json!({
        "interval": envoy_duration(duration(&od.interval)?),
        "base_ejection_time": envoy_duration(duration(&od.base_ejection_time)?),
        "max_ejection_percent": od.max_ejection_percent,
        "enforcing_success_rate": 0,
    });
    match od.consecutive5xx_errors {
        Some(n) if n > 0 => {
            outlier["consecutive_5xx"] = json!(n);
            outlier["enforcing_consecutive_5xx"] = json!(100);
        }
        _ => outlier["enforcing_consecutive_5xx"] = json!(0),
    }
    match od.consecutive_gateway_errors {
        Some(n) if n > 0 => {
            outlier["consecutive_gateway_failure"] = json!(n);
            outlier["enforcing_consecutive_gateway_failure"] = json!(100);
        }
        _ => outlier["enforcing_consecutive_gateway_failure"] = json!(0),
    }
    Ok(json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": envoy_duration(duration(&pool.tcp.connect_timeout)?),
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "circuit_breakers": {"thresholds": [{
            "max_connections": pool.tcp.max_connections,
            "max_pending_requests": pool.http.http1_max_pending_requests,
            "max_requests": pool.http.http2_max_requests,
            "max_retries": pool.http.max_retries,
        }]},
        "outlier_detection": outlier,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]},
    }))
}

fn route_config(name: &str, vs: &VirtualService, mesh: &LocalMesh) -> Result<Value, MeshError> {
    let mut routes = Vec::new();
    for route in &vs.http {
        let action = route_action(route, mesh)?;
        for m in &route.matches {
            let path = match (&m.uri.exact, &m.uri.prefix) {
                (Some(exact), _) => json!({"path": exact}),
                (None, Some(prefix)) => json!({"prefix": prefix}),
                (None, None) => return Err(MeshError::Invalid(format!("route {} matches no path", route.name))),
            };
            routes.push(json!({"name": route.name, "match": path, "route": action}));
        }
    }
    Ok(json!({"name": name, "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}]}))
}

fn route_action(route: &HttpRoute, mesh: &LocalMesh) -> Result<Value, MeshError> {
    // Only subsets that run locally get traffic; their weights keep their
    // proportions (Envoy needs a positive total).
    let mut weighted = Vec::new();
    for d in &route.route {
        let service = service_of(&d.destination.host);
        let subset = d.destination.subset.clone().unwrap_or_else(|| "v1".to_owned());
        let weight = match (mesh.weights.get(service), subset.as_str()) {
            (Some((v1, _)), "v1") => *v1,
            (Some((_, v2)), "v2") => *v2,
            _ => d.weight.unwrap_or(if route.route.len() == 1 { 100 } else { 0 }),
        };
        if weight > 0 && mesh.endpoints.by_subset.contains_key(&(service.to_owned(), subset.clone())) {
            weighted.push(json!({"name": format!("{service}-{subset}"), "weight": weight}));
        }
    }
    if weighted.is_empty() {
        return Err(MeshError::Invalid(format!("route {} has no destination running locally", route.name)));
    }
    let mut action = json!({
        "weighted_clusters": {"clusters": weighted},
        // gRPC callers' own deadlines (grpc-timeout) are honoured, uncapped,
        // as Istio configures them.
        "max_stream_duration": {"grpc_timeout_header_max": "0s"},
    });
    if let Some(timeout) = &route.timeout {
        action["timeout"] = json!(envoy_duration(duration(timeout)?));
    }
    if let Some(retries) = route.retries.as_ref().filter(|r| r.attempts > 0) {
        let mut policy = json!({
            "retry_on": retries.retry_on.clone().unwrap_or_default(),
            "num_retries": retries.attempts,
            // As Istio: a retry goes to another replica when there is one.
            "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"}}],
            "host_selection_retry_max_attempts": 5,
        });
        if let Some(per_try) = &retries.per_try_timeout {
            policy["per_try_timeout"] = json!(envoy_duration(duration(per_try)?));
        }
        action["retry_policy"] = policy;
    }
    Ok(action)
}

fn listener(name: &str, port: u16, routes: &Value) -> Value {
    json!({
        "name": name,
        "address": socket(port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "codec_type": "HTTP2",
                "http2_protocol_options": {},
                "route_config": routes,
                "http_filters": [{"name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }
        }]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> LocalMesh {
        let mut endpoints = Endpoints::default();
        endpoints
            .add("order", "v1", "127.0.0.1:7001")
            .add("order", "v2", "127.0.0.1:7002")
            .add("payment", "v1", "127.0.0.1:7003")
            .add("store", "v1", "127.0.0.1:7004")
            .add("notification", "v1", "127.0.0.1:7005");
        LocalMesh {
            admin_port: 9901,
            gateway_port: 8080,
            payment_port: 8081,
            endpoints,
            weights: BTreeMap::new(),
            health_check_interval: None,
        }
    }

    #[test]
    fn health_checks_route_only_to_serving_endpoints_when_asked() {
        let without = envoy_config(&local()).expect("renders");
        let clusters = without["static_resources"]["clusters"].as_array().expect("clusters");
        assert!(clusters.iter().all(|c| c.get("health_checks").is_none()));
        let with =
            envoy_config(&LocalMesh { health_check_interval: Some(Duration::from_millis(200)), ..local() }).expect("renders");
        let clusters = with["static_resources"]["clusters"].as_array().expect("clusters");
        assert_eq!(clusters.len(), 5);
        for cluster in clusters {
            let check = &cluster["health_checks"][0];
            assert_eq!(check["interval"], "0.200s", "{cluster}");
            assert_eq!(check["no_traffic_interval"], "0.200s");
            assert_eq!(check["unhealthy_threshold"], 1);
            assert_eq!(check["grpc_health_check"], json!({}), "the empty service name: readiness");
        }
    }

    fn find<'a>(list: &'a Value, name: &str) -> &'a Value {
        list.as_array().expect("a list").iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no {name}"))
    }

    /// The route of `listener` whose match has `key` (`path` or `prefix`) equal to `value`.
    fn route<'a>(config: &'a Value, listener: &str, key: &str, value: &str) -> &'a Value {
        let listener = find(&config["static_resources"]["listeners"], listener);
        let routes = &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
        routes.as_array().expect("routes").iter().find(|r| r["match"][key] == value).unwrap_or_else(|| panic!("no route {value}"))
    }

    #[test]
    fn durations_as_istio_writes_them() {
        assert_eq!(duration("2500ms").expect("ms"), Duration::from_millis(2500));
        assert_eq!(duration("1.5s").expect("s"), Duration::from_millis(1500));
        assert_eq!(duration("0s").expect("zero"), Duration::ZERO);
        assert!(duration("soon").is_err());
        assert_eq!(envoy_duration(Duration::from_millis(600)), "0.600s");
    }

    /// Every number Envoy gets for payment is the one in istio/payment.yaml.
    #[test]
    fn payment_policy_is_istios_numbers() {
        let payment = parse("payment.yaml", sources::PAYMENT).expect("parses");
        let rule = &payment.destination_rules["payment"];
        let vs = &payment.virtual_services["payment"];
        let config = envoy_config(&local()).expect("renders");
        let cluster = find(&config["static_resources"]["clusters"], "payment-v1");
        let limits = &cluster["circuit_breakers"]["thresholds"][0];
        let pool = &rule.traffic_policy.connection_pool;
        assert_eq!(limits["max_requests"], pool.http.http2_max_requests);
        assert_eq!(limits["max_pending_requests"], pool.http.http1_max_pending_requests);
        assert_eq!(limits["max_retries"], pool.http.max_retries);
        assert_eq!(limits["max_connections"], pool.tcp.max_connections);
        let od = &rule.traffic_policy.outlier_detection;
        let outlier = &cluster["outlier_detection"];
        assert_eq!(outlier["consecutive_5xx"], od.consecutive5xx_errors.expect("set"));
        assert_eq!(outlier["consecutive_gateway_failure"], od.consecutive_gateway_errors.expect("set"));
        assert_eq!(
            (outlier["enforcing_consecutive_5xx"].clone(), outlier["enforcing_consecutive_gateway_failure"].clone()),
            (json!(100), json!(100))
        );
        assert_eq!(outlier["max_ejection_percent"], od.max_ejection_percent);
        assert_eq!(outlier["base_ejection_time"], envoy_duration(duration(&od.base_ejection_time).expect("d")));

        let charge = route(&config, "payment", "path", "/foodmesh.payment.v1.PaymentService/Charge");
        let istio = &vs.http[0];
        let retries = istio.retries.as_ref().expect("retries");
        assert_eq!(charge["route"]["retry_policy"]["num_retries"], retries.attempts);
        assert_eq!(charge["route"]["retry_policy"]["retry_on"], retries.retry_on.clone().expect("retryOn"));
        assert_eq!(
            charge["route"]["retry_policy"]["per_try_timeout"],
            envoy_duration(duration(retries.per_try_timeout.as_deref().expect("set")).expect("d"))
        );
        assert_eq!(charge["route"]["timeout"], envoy_duration(duration(istio.timeout.as_deref().expect("set")).expect("d")));
        // FaultService is never retried, as payment.yaml says.
        let ops = route(&config, "payment", "prefix", "/foodmesh.payment.v1.FaultService/");
        assert!(ops["route"].get("retry_policy").is_none());
    }

    #[test]
    fn weights_come_from_istio_unless_a_canary_overrides_them() {
        let config = envoy_config(&local()).expect("renders");
        let place = route(&config, "gateway", "path", "/foodmesh.order.v1.OrderService/PlaceOrder");
        // gateway.yaml: 100/0, and a zero weight gets no cluster entry.
        assert_eq!(place["route"]["weighted_clusters"]["clusters"], json!([{"name": "order-v1", "weight": 100}]));

        let mut canary = local();
        canary.weights.insert("order".into(), (90, 10));
        let config = envoy_config(&canary).expect("renders");
        let reads = route(&config, "gateway", "prefix", "/foodmesh.order.v1.OrderService/");
        assert_eq!(
            reads["route"]["weighted_clusters"]["clusters"],
            json!([{"name": "order-v1", "weight": 90}, {"name": "order-v2", "weight": 10}])
        );
        // A stream route keeps no timeout and no retries.
        let watch = route(&config, "gateway", "path", "/foodmesh.order.v1.OrderService/WatchOrder");
        assert_eq!(watch["route"]["timeout"], "0.000s");
        assert!(watch["route"].get("retry_policy").is_none());
    }

    #[test]
    fn a_subset_without_a_rule_is_refused() {
        let mut mesh = local();
        mesh.endpoints.add("payment", "v9", "127.0.0.1:7010");
        assert!(envoy_config(&mesh).is_err());
    }
}
