"""Checks the chart's PrometheusRule, for which no schema is at hand offline.

    rules.py RULES_YAML

Every rule must be an alert with an expression, a `for`, a severity of
warning or critical, a summary and a runbook line; names must be unique and
CamelCase; every foodmesh metric an expression reads must be one the
services export (the list in crates/platform/src/metrics.rs, whose table the
e2e test `metrics` checks against a live scrape).
"""

import pathlib
import re
import sys

import yaml

doc = yaml.safe_load(pathlib.Path(sys.argv[1]).read_text())
root = pathlib.Path(__file__).resolve().parents[2]
table = (root / "crates/platform/src/metrics.rs").read_text()
exported = set(re.findall(r"^//! \| `(foodmesh_[a-z_]+)", table, re.M))
problems = []
if doc.get("apiVersion") != "monitoring.coreos.com/v1" or doc.get("kind") != "PrometheusRule":
    problems.append("not a monitoring.coreos.com/v1 PrometheusRule")
names = set()
rules = [r for g in doc.get("spec", {}).get("groups", []) for r in g.get("rules", [])]
if not rules:
    problems.append("no rules")
for rule in rules:
    name = rule.get("alert", "?")
    if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name):
        problems.append(f"{name}: alert names are CamelCase")
    if name in names:
        problems.append(f"{name}: defined twice")
    names.add(name)
    expr = str(rule.get("expr", ""))
    if not expr.strip():
        problems.append(f"{name}: no expr")
    if not re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))):
        problems.append(f"{name}: `for` must be a duration")
    if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
        problems.append(f"{name}: severity must be warning or critical")
    annotations = rule.get("annotations", {})
    for key in ("summary", "runbook"):
        if not str(annotations.get(key, "")).strip():
            problems.append(f"{name}: no {key} annotation")
    for metric in set(re.findall(r"\b(foodmesh_[a-z_]+)", expr)):
        base = re.sub(r"_(bucket|sum|count|total)$", "", metric)
        if metric not in exported and base not in exported and f"{base}_total" not in exported:
            problems.append(f"{name}: {metric} is not a metric the services export")
for p in problems:
    print(f"rules: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"PrometheusRule: {len(rules)} alerts, each with a runbook; every metric they read is exported")
