//! Malformed and hostile input on every RPC of every service, generated from
//! the contracts themselves (so a new RPC or field is covered without editing
//! this file): random field values chosen to hurt (empty, huge, control
//! characters, unknown enum numbers, extreme numbers, bad timestamps), from
//! every kind of caller, plus bodies that are not protobuf at all.
//!
//! Every answer must be a success or a clear, documented error: never
//! INTERNAL or UNKNOWN (a panic, an unmapped error), always an ErrorInfo with a
//! reason, and a BadRequest naming fields on INVALID_ARGUMENT. Afterwards every
//! service still serves and the saga's invariants hold: nothing half done.
//! The seed is printed (stderr); `FOODMESH_FUZZ_SEED=N` replays a run.

use std::{collections::BTreeMap, str::FromStr, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use foodmesh_e2e::{Mesh, MeshOptions, Service};
use foodmesh_platform::testing::authed;
use foodmesh_proto::payment::v1::Faults;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, MethodDescriptor, Value};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    transport::Channel,
};
use tonic_types::StatusExt;

/// Requests per RPC and caller.
const ROUNDS: usize = 12;

/// A small deterministic generator, so that a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn hostile_string(rng: &mut Rng) -> String {
    let fixed = [
        "",
        " ",
        "a",
        "seoul-bbq",
        "bulgogi",
        "tok_visa",
        "tok_decline",
        "ord_00000000000000000000000000000000",
        "'; DROP TABLE orders; --",
        "../../etc/passwd",
        "%s%n%x",
        "\u{0}",
        "line\nbreak",
        "\u{202e}evil",
        "🍕🍕🍕",
        "KRW",
        "XXX",
    ];
    match rng.below(4) {
        0 => "é".repeat(rng.below(3000)),
        1 => (0..rng.below(300)).map(|_| char::from(b' ' + u8::try_from(rng.below(95)).unwrap_or(0))).collect(),
        _ => (*rng.pick(&fixed)).to_owned(),
    }
}

fn hostile_i64(rng: &mut Rng) -> i64 {
    let fixed = [0, 1, -1, 2, 20, 21, 100, 101, 1000, i64::from(i32::MAX), i64::from(i32::MIN), i64::MAX, i64::MIN];
    if rng.chance(3) { i64::from_ne_bytes(rng.next().to_ne_bytes()) } else { *rng.pick(&fixed) }
}

fn value(kind: &Kind, rng: &mut Rng, depth: usize) -> Value {
    let n = hostile_i64(rng);
    match kind {
        Kind::String => Value::String(hostile_string(rng)),
        Kind::Bytes => Value::Bytes(Bytes::from(hostile_string(rng).into_bytes())),
        Kind::Bool => Value::Bool(rng.chance(2)),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(n as i32),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(n),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(n as u32),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(n as u64),
        Kind::Double => Value::F64(*rng.pick(&[0.0, -1.0, 1e308, f64::NAN, f64::INFINITY, n as f64])),
        Kind::Float => Value::F32(*rng.pick(&[0.0, -1.0, f32::NAN, f32::INFINITY, n as f32])),
        Kind::Enum(e) => {
            let known: Vec<i32> = e.values().map(|v| v.number()).collect();
            Value::EnumNumber(if rng.chance(4) { *rng.pick(&[-1, 99, i32::MAX]) } else { *rng.pick(&known) })
        }
        Kind::Message(m) => Value::Message(hostile_message(m, rng, depth + 1)),
    }
}

fn hostile_message(desc: &MessageDescriptor, rng: &mut Rng, depth: usize) -> DynamicMessage {
    let mut message = DynamicMessage::new(desc.clone());
    if depth > 3 {
        return message;
    }
    for field in desc.fields() {
        if rng.chance(4) || field.is_map() {
            continue;
        }
        let kind = field.kind();
        let v = if field.is_list() {
            let len = if rng.chance(10) { 150 } else { rng.below(4) };
            Value::List((0..len).map(|_| value(&kind, rng, depth)).collect())
        } else {
            value(&kind, rng, depth)
        };
        // A later member of a oneof replaces an earlier one, as on the wire.
        message.set_field(&field, v);
    }
    message
}

/// Passes request and response bodies through untouched, so any bytes can be sent.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug, Clone, Copy, Default)]
struct RawEncoder;

#[derive(Debug, Clone, Copy, Default)]
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Calls `method` with `body`; for a server stream, its first message or error.
async fn call(channel: &Channel, method: &MethodDescriptor, body: Bytes, token: Option<&str>) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_str(&format!("/{}/{}", method.parent_service().full_name(), method.name()))
        .expect("a method path");
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(5));
    if let Some(token) = token {
        request = authed(request.into_inner(), token);
        request.set_timeout(Duration::from_secs(5));
    }
    if method.is_server_streaming() {
        let mut stream = grpc.server_streaming(request, path, RawCodec).await?.into_inner();
        // The first message is enough: the stream then only waits for changes.
        match tokio::time::timeout(Duration::from_secs(2), stream.message()).await {
            Ok(first) => first.map(|_| ()),
            Err(_) => Ok(()),
        }
    } else {
        grpc.unary(request, path, RawCodec).await.map(|_| ())
    }
}

fn service_of(method: &MethodDescriptor) -> Service {
    match method.parent_service().package_name() {
        "foodmesh.order.v1" => Service::Order,
        "foodmesh.payment.v1" => Service::Payment,
        "foodmesh.store.v1" => Service::Store,
        "foodmesh.notification.v1" => Service::Notification,
        other => panic!("no service serves package {other}"),
    }
}

/// What is wrong with an answer, if anything.
fn problem(status: &Status) -> Option<String> {
    let allowed = [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::Unauthenticated,
        Code::Aborted,
        Code::Unavailable,
        Code::ResourceExhausted,
    ];
    if !allowed.contains(&status.code()) {
        return Some(format!("code {:?}", status.code()));
    }
    let Some(info) = status.get_details_error_info().filter(|i| !i.reason.is_empty()) else {
        return Some("no ErrorInfo reason".to_owned());
    };
    // A body that is not the message at all has no fields to name.
    if status.code() == Code::InvalidArgument
        && info.reason != "MALFORMED_REQUEST"
        && status.get_details_bad_request().is_none_or(|b| b.field_violations.is_empty())
    {
        return Some("INVALID_ARGUMENT without field violations".to_owned());
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_on_every_rpc_gets_a_clear_error_and_breaks_nothing() {
    let seed = std::env::var("FOODMESH_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    eprintln!("FOODMESH_FUZZ_SEED={seed}");
    let mut rng = Rng(seed);
    let mesh = Mesh::start_with(MeshOptions { auto_kitchen: Some(Duration::from_millis(50)), ..Default::default() }).await;
    // Some real orders, so that hostile requests can also reach them.
    let mut known_orders = Vec::new();
    for (i, customer) in ["alice", "bob"].into_iter().enumerate() {
        known_orders.push(mesh.place(customer, &format!("seed-{i}"), "seoul-bbq", &[("bulgogi", 1)]).await.order_id);
    }

    let pool = DescriptorPool::decode(foodmesh_proto::FILE_DESCRIPTOR_SET).expect("the contracts' descriptors");
    let channels: BTreeMap<&str, Channel> = [Service::Order, Service::Payment, Service::Store, Service::Notification]
        .into_iter()
        .map(|s| {
            let name = match s {
                Service::Order => "order",
                Service::Payment => "payment",
                Service::Store => "store",
                Service::Notification => "notification",
            };
            (name, Channel::from_shared(format!("http://{}", mesh.addr(s))).expect("uri").connect_lazy())
        })
        .collect();
    let channel = |method: &MethodDescriptor| match service_of(method) {
        Service::Order => &channels["order"],
        Service::Payment => &channels["payment"],
        Service::Store => &channels["store"],
        Service::Notification => &channels["notification"],
    };
    let callers = [
        Some(mesh.customer("alice")),
        Some(mesh.staff("seoul-bbq")),
        Some(mesh.keys.operator()),
        None,
        Some("Bearer not.a.jwt".to_owned()),
    ];

    let methods: Vec<MethodDescriptor> = pool
        .services()
        .filter(|s| s.package_name().starts_with("foodmesh."))
        .flat_map(|s| s.methods().collect::<Vec<_>>())
        .collect();
    assert!(methods.len() >= 25, "every RPC of the contracts: {}", methods.len());
    let (mut calls, mut answers) = (0, BTreeMap::<String, usize>::new());
    let mut problems = Vec::new();
    for method in &methods {
        for caller in &callers {
            for round in 0..ROUNDS {
                let body = if round == 0 {
                    // Not protobuf at all: a truncated varint, then a field with a bad wire type.
                    Bytes::from_static(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f])
                } else {
                    let mut message = hostile_message(&method.input(), &mut rng, 0);
                    // Now and then, aim at a real order.
                    if let Some(field) = method.input().get_field_by_name("order_id")
                        && rng.chance(3)
                    {
                        message.set_field(&field, Value::String(rng.pick(&known_orders).clone()));
                    }
                    Bytes::from(message.encode_to_vec())
                };
                calls += 1;
                let outcome = call(channel(method), method, body, caller.as_deref()).await;
                let key = match &outcome {
                    Ok(()) => "OK".to_owned(),
                    Err(status) => format!("{:?}", status.code()),
                };
                *answers.entry(key).or_default() += 1;
                if let Err(status) = &outcome
                    && let Some(what) = problem(status)
                {
                    problems.push(format!("{} round {round}: {what}: {status:?}", method.full_name()));
                }
            }
        }
        if method.parent_service().name() == "FaultService" {
            // Whatever faults the operator's random calls injected, take them out again.
            mesh.set_payment_faults(Faults::default()).await;
        }
    }
    eprintln!("FIGURES | hostile_input | {calls} calls over {} RPCs | answers {answers:?}", methods.len());
    assert!(problems.is_empty(), "{} of {calls} answers were not clear errors:\n{}", problems.len(), problems.join("\n"));

    // Every service still serves, and nothing was left half done.
    let placed = mesh.place("carol", "after-the-storm", "seoul-bbq", &[("bulgogi", 1)]).await;
    assert!(!placed.order_id.is_empty());
    mesh.assert_invariants().await;
}
