{{/*
Helpers shared by every template. Object names are the service names
(order, payment, store, notification): istio/ routes to them and its
AuthorizationPolicies name their ServiceAccounts, so they carry no release
prefix. Install one release per namespace.
*/}}

{{/* The services, in a fixed order. */}}
{{- define "foodmesh.services" -}}
order payment store notification
{{- end -}}

{{/* The gRPC port every service listens on inside its pod. */}}
{{- define "foodmesh.grpcPort" -}}50051{{- end -}}

{{/* Labels every object carries. */}}
{{- define "foodmesh.labels" -}}
app.kubernetes.io/part-of: foodmesh
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/* Labels of one service's objects; `app` is what istio/ selects on. */}}
{{- define "foodmesh.serviceLabels" -}}
{{ include "foodmesh.labels" .root }}
app: {{ .name }}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{/* The image of a component ("order", …, or "cli"): a canary's own tag
     first, then the component's pinned digest, then the release tag. */}}
{{- define "foodmesh.image" -}}
{{- $image := .root.Values.image -}}
{{- $repo := printf "%s/foodmesh-%s" $image.registry .name -}}
{{- $digest := get $image.digests .name -}}
{{- if .tag -}}
{{ $repo }}:{{ .tag }}
{{- else if $digest -}}
{{ $repo }}@{{ $digest }}
{{- else -}}
{{ $repo }}:{{ $image.tag | default .root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The Secret holding URLs and keys. */}}
{{- define "foodmesh.secretName" -}}
{{- .Values.secrets.existingSecret | default "foodmesh" -}}
{{- end -}}

{{/* Whether a service keeps its data in SQLite (on a volume, one replica). */}}
{{- define "foodmesh.onSqlite" -}}
{{- if hasPrefix "sqlite:" .database.url -}}true{{- end -}}
{{- end -}}

{{/* The termination grace period: preStop + drain + the longest request +
     10 s for consumers to ack their batch and the outbox to flush. */}}
{{- define "foodmesh.gracePeriod" -}}
{{- $c := .Values.common -}}
{{- add $c.preStopSeconds $c.drainSeconds $c.requestTimeoutSeconds 10 -}}
{{- end -}}
