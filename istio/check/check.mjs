// Checks istio/: every Istio object against the Istio CRD schemas
// (@kubernetes-models/istio, pinned), unknown fields flagged, then the
// objects against each other and against the contracts in proto/:
//  - every host names a Service in services.yaml, every port one of its ports;
//  - every subset a route uses exists in its host's DestinationRule;
//  - the weights of every route add up to 100;
//  - every Service port is named for gRPC (name grpc* or appProtocol grpc);
//  - every route match names a real gRPC service or method of proto/;
//  - retries only on what is safe to repeat: streams never; mutations only on
//    connection failures, except Charge and Refund (idempotent on request_id);
//    retryOn values only from the set that fits gRPC;
//  - gateways and AuthorizationPolicy selectors name what exists.
// Prints each problem and exits 1 if there is any.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
// The folder to check: istio/ by default; the self-test passes a broken one.
const istioDir = process.argv[2] ?? join(here, "..");
const root = join(here, "../..");
const models = join(here, "node_modules/@kubernetes-models/istio");
const problems = [];
const problem = (where, what) => problems.push(`${where}: ${what}`);

// --- Load every document. -------------------------------------------------
const files = [
  ...readdirSync(istioDir).filter((f) => f.endsWith(".yaml")).map((f) => join(istioDir, f)),
  ...(existsSync(join(istioDir, "chaos")) ? readdirSync(join(istioDir, "chaos")) : [])
    .filter((f) => f.endsWith(".yaml"))
    .map((f) => join(istioDir, "chaos", f)),
];
const objects = [];
for (const file of files) {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    if (doc.errors.length) {
      problem(relative(root, file), doc.errors.map((e) => e.message).join("; "));
      continue;
    }
    const object = doc.toJS();
    if (object) objects.push({ file: relative(root, file), chaos: file.includes("/chaos/"), object });
  }
}
const where = (o) => `${o.file} ${o.object.kind}/${o.object.metadata?.name}`;

// --- Schemas. -------------------------------------------------------------
// Keys the schema knows, read from its compiled validator: the CRDs allow
// unknown fields (the API server prunes them silently), so a misspelt
// "perTryTimout" would pass validation and do nothing.
const knownKeys = new Map();
function keysOf(schemaFile) {
  if (!knownKeys.has(schemaFile)) {
    const source = readFileSync(join(models, "_schemas", schemaFile), "utf8");
    const keys = new Set();
    for (const m of source.matchAll(/data\.([A-Za-z0-9_$]+)/g)) keys.add(m[1]);
    for (const m of source.matchAll(/parentDataProperty:"([A-Za-z0-9_$]+)"/g)) keys.add(m[1]);
    knownKeys.set(schemaFile, keys);
  }
  return knownKeys.get(schemaFile);
}
// Fields whose keys are free (label maps).
const freeMaps = new Set(["labels", "matchLabels", "selector", "annotations"]);
function unknownKeys(value, keys, path, out) {
  if (Array.isArray(value)) value.forEach((v, i) => unknownKeys(v, keys, `${path}[${i}]`, out));
  else if (value && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      if (!keys.has(k)) out.push(`${path}.${k}`);
      if (!freeMaps.has(k)) unknownKeys(v, keys, `${path}.${k}`, out);
    }
  }
}

for (const o of objects) {
  const { apiVersion, kind } = o.object;
  if (apiVersion === "v1" && kind === "Service") continue;
  const [group, version] = (apiVersion ?? "").split("/");
  if (!group?.endsWith("istio.io")) {
    problem(where(o), `not an Istio object (${apiVersion})`);
    continue;
  }
  let Model;
  try {
    Model = (await import(`@kubernetes-models/istio/${group}/${version}/${kind}`))[kind];
  } catch {
    problem(where(o), `no Istio schema for ${apiVersion} ${kind}`);
    continue;
  }
  try {
    new Model(o.object).validate();
  } catch (e) {
    problem(where(o), `schema: ${e.message}`);
  }
  const schemaFile = `${group.split(".").map((p) => p[0].toUpperCase() + p.slice(1)).join("")}${version[0].toUpperCase()}${version.slice(1)}${kind}.js`;
  const unknown = [];
  unknownKeys(o.object.spec, keysOf(schemaFile), "spec", unknown);
  for (const path of unknown) problem(where(o), `unknown field ${path}`);
}

// --- The real services, ports and gRPC methods. ----------------------------
const services = new Map(); // name -> {ports: Map(number -> port)}
for (const o of objects.filter((o) => o.object.kind === "Service")) {
  const ports = new Map();
  for (const port of o.object.spec.ports ?? []) {
    ports.set(port.port, port);
    if (!(port.name ?? "").match(/^grpc(-|$)/) && port.appProtocol !== "grpc") {
      problem(where(o), `port ${port.port} is not named for gRPC (name grpc or grpc-*, or appProtocol grpc)`);
    }
  }
  services.set(o.object.metadata.name, { ports, namespace: o.object.metadata.namespace });
}
const serviceOf = (host) => {
  const name = host.replace(/\.foodmesh(\.svc(\.cluster\.local)?)?$/, "");
  return services.has(name) ? name : undefined;
};

const grpc = new Map(); // "pkg.Service" -> Map(method -> {streaming})
function readProtos(dir) {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) readProtos(path);
    else if (entry.name.endsWith(".proto")) {
      const text = readFileSync(path, "utf8");
      const pkg = text.match(/^package\s+([\w.]+);/m)?.[1];
      for (const s of text.matchAll(/^service\s+(\w+)\s*\{([\s\S]*?)^\}/gm)) {
        const methods = new Map();
        for (const r of s[2].matchAll(/rpc\s+(\w+)\s*\(\s*(stream\s+)?[\w.]+\s*\)\s*returns\s*\(\s*(stream\s+)?/g)) {
          methods.set(r[1], { streaming: Boolean(r[2] || r[3]) });
        }
        grpc.set(`${pkg}.${s[1]}`, methods);
      }
    }
  }
}
readProtos(join(root, "proto/foodmesh"));
grpc.set("grpc.health.v1.Health", new Map([["Check", { streaming: false }], ["Watch", { streaming: true }]]));

// Which methods a match selects: an exact path is one method; a prefix
// /pkg.Service/ or /pkg. is every method it covers.
function methodsOf(match) {
  const uri = match.uri ?? {};
  const out = [];
  if (uri.exact) {
    const m = uri.exact.match(/^\/([\w.]+)\/(\w+)$/);
    if (!m || !grpc.get(m[1])?.has(m[2])) return null;
    out.push({ service: m[1], method: m[2], ...grpc.get(m[1]).get(m[2]) });
  } else if (uri.prefix) {
    for (const [service, methods] of grpc) {
      if (`/${service}/`.startsWith(uri.prefix) || uri.prefix.startsWith(`/${service}/`)) {
        for (const [method, info] of methods) {
          if (`/${service}/${method}`.startsWith(uri.prefix)) out.push({ service, method, ...info });
        }
      }
    }
    if (out.length === 0) return null;
  } else return null;
  return out;
}

// --- Across objects. -------------------------------------------------------
const subsets = new Map(); // service -> Set(subset)
for (const o of objects.filter((o) => o.object.kind === "DestinationRule" && !o.chaos)) {
  const name = serviceOf(o.object.spec.host);
  if (!name) problem(where(o), `host ${o.object.spec.host} is not a Service in istio/services.yaml`);
  subsets.set(name, new Set((o.object.spec.subsets ?? []).map((s) => s.name)));
  const od = o.object.spec.trafficPolicy?.outlierDetection;
  if (!od || !(od.consecutive5xxErrors > 0 || od.consecutiveGatewayErrors > 0)) {
    problem(where(o), "outlierDetection must eject on consecutive errors (consecutive5xxErrors or consecutiveGatewayErrors > 0)");
  }
  if (od && !(od.maxEjectionPercent > 0)) problem(where(o), "outlierDetection.maxEjectionPercent must let it eject (> 0)");
}
const gateways = new Set(objects.filter((o) => o.object.kind === "Gateway").map((o) => o.object.metadata.name));
const gatewayHosts = new Set(objects.filter((o) => o.object.kind === "Gateway").flatMap((o) => o.object.spec.servers.flatMap((s) => s.hosts)));

// retryOn values that mean something for gRPC: the gRPC status conditions and
// the connection-level ones. "5xx", "gateway-error" and "retriable-4xx" look at
// HTTP status codes, which a gRPC error never has (it travels as HTTP 200).
const grpcRetryOn = new Set(["cancelled", "deadline-exceeded", "internal", "resource-exhausted", "unavailable", "connect-failure", "refused-stream", "reset"]);
const neverArrived = new Set(["connect-failure", "refused-stream"]);
const idempotentMutations = new Set(["foodmesh.payment.v1.PaymentService/Charge", "foodmesh.payment.v1.PaymentService/Refund"]);
const isRead = (method) => /^(Get|List)/.test(method) || method === "Check";

for (const o of objects.filter((o) => o.object.kind === "VirtualService")) {
  const spec = o.object.spec;
  for (const g of spec.gateways ?? ["mesh"]) {
    if (g !== "mesh" && !gateways.has(g)) problem(where(o), `gateway ${g} does not exist`);
  }
  for (const host of spec.hosts ?? []) {
    if (!serviceOf(host) && !gatewayHosts.has(host)) problem(where(o), `host ${host} is neither a Service nor a Gateway host`);
  }
  // Routes match in order: a method goes to the first route that matches it.
  const taken = new Set();
  for (const [i, route] of (spec.http ?? []).entries()) {
    const at = `${where(o)} http[${i}] ${route.name ?? ""}`;
    const destinations = route.route ?? [];
    const weights = destinations.map((d) => d.weight ?? (destinations.length === 1 ? 100 : 0));
    const total = weights.reduce((a, b) => a + b, 0);
    if (total !== 100) problem(at, `weights add up to ${total}, not 100`);
    for (const d of destinations) {
      const name = serviceOf(d.destination.host);
      if (!name) {
        problem(at, `destination ${d.destination.host} is not a Service in istio/services.yaml`);
        continue;
      }
      if (d.destination.port && !services.get(name).ports.has(d.destination.port.number)) {
        problem(at, `port ${d.destination.port.number} is not a port of Service ${name}`);
      }
      if (d.destination.subset && !subsets.get(name)?.has(d.destination.subset)) {
        problem(at, `subset ${d.destination.subset} is not defined in ${name}'s DestinationRule`);
      }
    }
    const methods = [];
    for (const match of route.match ?? []) {
      const found = methodsOf(match);
      if (!found) problem(at, `match ${JSON.stringify(match.uri)} names no gRPC method in proto/`);
      else methods.push(...found.filter((m) => !taken.has(`${m.service}/${m.method}`)));
    }
    for (const m of methods) taken.add(`${m.service}/${m.method}`);
    const retries = route.retries ?? {};
    const retryOn = (retries.retryOn ?? "").split(",").filter(Boolean);
    const attempts = retries.attempts ?? (retryOn.length ? 2 : 0);
    for (const value of retryOn) {
      if (!grpcRetryOn.has(value)) problem(at, `retryOn ${value} does not fit gRPC`);
    }
    if (attempts > 0 && retryOn.length === 0) problem(at, "retries without retryOn use Istio's defaults, which are not all safe here: name them");
    for (const m of methods) {
      const id = `${m.service}/${m.method}`;
      if (m.streaming) {
        if (attempts > 0) problem(at, `${id} is a stream and must not be retried`);
        if (route.timeout !== "0s") problem(at, `${id} is a stream: its timeout must be 0s (none)`);
      } else if (!isRead(m.method) && !idempotentMutations.has(id) && attempts > 0) {
        const unsafe = retryOn.filter((v) => !neverArrived.has(v));
        if (unsafe.length) problem(at, `${id} changes state: retry only when it never arrived (not on ${unsafe.join(",")})`);
      }
    }
  }
}

for (const o of objects.filter((o) => o.object.kind === "AuthorizationPolicy" && o.object.metadata.namespace === "foodmesh")) {
  const sel = o.object.spec.selector;
  const apps = [sel?.matchLabels?.app, ...(sel?.matchExpressions ?? []).flatMap((e) => e.values ?? [])].filter(Boolean);
  for (const app of apps) if (!services.has(app)) problem(where(o), `selects app ${app}, which is not a Service`);
}
const security = objects.map((o) => o.object);
if (!security.some((s) => s.kind === "PeerAuthentication" && s.spec?.mtls?.mode === "STRICT")) problems.push("no PeerAuthentication with mtls STRICT");
if (!security.some((s) => s.kind === "AuthorizationPolicy" && s.metadata.namespace === "foodmesh" && Object.keys(s.spec ?? {}).length === 0)) {
  problems.push("no deny-by-default AuthorizationPolicy (an empty spec) in namespace foodmesh");
}

const counts = {};
for (const o of objects) counts[o.object.kind] = (counts[o.object.kind] ?? 0) + 1;
if (problems.length) {
  for (const p of problems) console.error(`istio check: ${p}`);
  console.error(`istio check: ${problems.length} problem(s) in ${objects.length} objects`);
  process.exit(1);
}
console.log(`istio check: ${objects.length} objects valid (${Object.entries(counts).map(([k, v]) => `${v} ${k}`).join(", ")})`);
