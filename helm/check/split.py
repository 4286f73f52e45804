"""Splits `helm template` output for the chart checks.

    split.py RENDERED OUTDIR

writes OUTDIR/kubernetes.yaml (every object Kubernetes itself defines, for
kubernetes-validate and checkov) and OUTDIR/istio/rendered.yaml (the Istio
objects plus the Services they route to, for istio/check) and
OUTDIR/rules.yaml (the PrometheusRule, for rules.py). Fails if an
object has no kind or apiVersion, or if two objects share kind, namespace
and name (Kubernetes would keep only the last).
"""

import pathlib
import sys

import yaml

rendered, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
core, mesh, seen = [], [], set()
for doc in yaml.safe_load_all(rendered.read_text()):
    if not doc:
        continue
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    meta = doc.get("metadata") or {}
    if not kind or not api or not meta.get("name"):
        sys.exit(f"an object without kind, apiVersion or name: {doc}")
    key = (kind, meta.get("namespace"), meta["name"])
    if key in seen:
        sys.exit(f"rendered twice: {key}")
    seen.add(key)
    if api.endswith("istio.io/v1") or ".istio.io/" in api:
        mesh.append(doc)
    elif api.startswith("monitoring.coreos.com/"):
        # No schema for the Prometheus Operator's CRDs here: checked by
        # helm/check/rules.py and by the e2e test `metrics`.
        (out / "rules.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    else:
        core.append(doc)
        if kind == "Service":
            mesh.append(doc)
(out / "istio").mkdir(parents=True, exist_ok=True)
(out / "kubernetes.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
(out / "istio" / "rendered.yaml").write_text(yaml.safe_dump_all(mesh, sort_keys=False))
print(f"{len(core)} Kubernetes objects, {len(mesh) - sum(d['kind'] == 'Service' for d in mesh)} Istio objects")
