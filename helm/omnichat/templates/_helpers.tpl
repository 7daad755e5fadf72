{{/*
Names. Kubernetes names are at most 63 characters; the longest suffix the chart adds to the
fullname is "-persistence-headless" (21), so the fullname is cut at 42.
*/}}
{{- define "omnichat.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "omnichat.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 42 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 42 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "omnichat.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "omnichat.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: omnichat
{{- end }}

{{/* Selector labels of one component; call with (dict "root" $ "c" $component). */}}
{{- define "omnichat.selectorLabels" -}}
app.kubernetes.io/name: {{ include "omnichat.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .c.name }}
{{- end }}

{{- define "omnichat.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
What the chart knows about each service: program, ports (the programs' own defaults), the
values key. Rendered as YAML and read back with fromYaml.
*/}}
{{- define "omnichat.components" -}}
persistence:
  key: persistence
  name: persistence
  program: omnichat-persistence
  args: [serve]
  grpcPort: 50051
  httpPort: 8080
  httpPortName: admin
  httpListenEnv: OMNICHAT_ADMIN_LISTEN
  webhook: false
connectorLine:
  key: connectorLine
  name: connector-line
  program: omnichat-connector-line
  args: []
  grpcPort: 50052
  httpPort: 8081
  httpPortName: http
  httpListenEnv: OMNICHAT_HTTP_LISTEN
  webhook: true
connectorMeta:
  key: connectorMeta
  name: connector-meta
  program: omnichat-connector-meta
  args: []
  grpcPort: 50053
  httpPort: 8082
  httpPortName: http
  httpListenEnv: OMNICHAT_HTTP_LISTEN
  webhook: true
{{- end }}

{{/* The enabled components, in a fixed order, as a YAML list (read with fromYamlArray). */}}
{{- define "omnichat.enabledComponents" -}}
{{- $all := include "omnichat.components" . | fromYaml }}
{{- range $key := list "persistence" "connectorLine" "connectorMeta" }}
{{- $v := index $.Values $key }}
{{- if or (eq $key "persistence") $v.enabled }}
- {{ index $all $key | toJson }}
{{- end }}
{{- end }}
{{- end }}

{{- define "omnichat.tlsEnabled" -}}
{{- if ne .Values.tls.mode "disabled" }}true{{ end }}
{{- end }}

{{/* The probe type of one kind ("liveness" or "readiness"): grpc or http. */}}
{{- define "omnichat.probeType" -}}
{{- $t := (index .root.Values.probes .kind).type }}
{{- if eq $t "auto" }}
{{- if include "omnichat.tlsEnabled" .root }}http{{ else }}grpc{{ end }}
{{- else }}
{{- $t }}
{{- end }}
{{- end }}

{{/* The headless Service of persistence and the gRPC target the connectors dial. */}}
{{- define "omnichat.persistenceHeadless" -}}
{{- printf "%s-persistence-headless" (include "omnichat.fullname" .) }}
{{- end }}

{{- define "omnichat.persistenceTarget" -}}
{{- printf "dns:///%s.%s.svc.%s:50051" (include "omnichat.persistenceHeadless" .) .Release.Namespace .Values.clusterDomain }}
{{- end }}

{{/* Name of the TLS Secret of a component; call with (dict "root" $ "c" $component). */}}
{{- define "omnichat.tlsSecret" -}}
{{- if eq .root.Values.tls.mode "certManager" }}
{{- printf "%s-%s-tls" (include "omnichat.fullname" .root) .c.name }}
{{- else }}
{{- index .root.Values.tls.secrets .c.key }}
{{- end }}
{{- end }}

{{/* securityContext of every pod and container. */}}
{{- define "omnichat.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "omnichat.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
Rules across values that the schema cannot express; a broken rule fails the render with the
reason.
*/}}
{{- define "omnichat.validate" -}}
{{- if ne .Values.tls.mode "disabled" }}
{{- range $kind := list "liveness" "readiness" }}
{{- if eq (index $.Values.probes $kind).type "grpc" }}
{{- fail (printf "probes.%s.type: grpc cannot work with tls.mode %s: the kubelet's gRPC probe has no client certificate; use auto or http" $kind $.Values.tls.mode) }}
{{- end }}
{{- end }}
{{- end }}
{{- range $key := list "persistence" "connectorLine" "connectorMeta" }}
{{- $a := (index $.Values $key).autoscaling }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "%s.autoscaling: minReplicas (%d) must not exceed maxReplicas (%d)" $key (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- end }}
{{- end }}
