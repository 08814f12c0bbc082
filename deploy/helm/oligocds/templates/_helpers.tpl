{{/* vim: set filetype=mustache: */}}
{{/*
Expand the name of the chart.
*/}}
{{- define "oligocds.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Namespace to set on the resources.
*/}}
{{- define "oligocds.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "oligocds.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of the worker Deployment (the suffix fits in 63 characters).
*/}}
{{- define "oligocds.workerName" -}}
{{- printf "%s-worker" (include "oligocds.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}

{{/*
Name of the rules ConfigMap mounted at rules.mountPath.
*/}}
{{- define "oligocds.rulesConfigMapName" -}}
{{- default (printf "%s-rules" (include "oligocds.fullname" . | trunc 57 | trimSuffix "-")) .Values.rules.existingConfigMap }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "oligocds.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create the name of the service account to use.
*/}}
{{- define "oligocds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "oligocds.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable for the life of a release, so never the chart version (helm.sh/chart) or app version.
*/}}
{{- define "oligocds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "oligocds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels for every object.
*/}}
{{- define "oligocds.labels" -}}
helm.sh/chart: {{ include "oligocds.chart" . }}
{{ include "oligocds.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: oligocds
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels of one component (api, worker): call with (dict "ctx" $ "component" "api").
*/}}
{{- define "oligocds.componentSelectorLabels" -}}
{{ include "oligocds.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Labels of one component's objects: call with (dict "ctx" $ "component" "api").
*/}}
{{- define "oligocds.componentLabels" -}}
{{ include "oligocds.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
The container image: repository@digest when a digest is set, else repository:tag (tag defaults to appVersion).
*/}}
{{- define "oligocds.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
An environment variable value as a string; whole numbers print without an exponent (Helm reads them as floats).
*/}}
{{- define "oligocds.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . | toString }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
Fail early on values that would render a Deployment that cannot start.
*/}}
{{- define "oligocds.validateValues" -}}
{{- if and .Values.worker.enabled (not .Values.kafka.bootstrap) }}
{{- fail "worker.enabled needs kafka.bootstrap: the worker consumes the Kafka input topic" }}
{{- end }}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) }}
{{- fail "kafka.sasl.mechanism needs kafka.sasl.existingSecret (the Secret with the SASL user name and password)" }}
{{- end }}
{{- if and .Values.kafka.tls.existingSecret (not (or .Values.kafka.tls.caKey .Values.kafka.tls.certKey)) }}
{{- fail "kafka.tls.existingSecret needs kafka.tls.caKey and/or kafka.tls.certKey" }}
{{- end }}
{{- if ne (empty .Values.kafka.tls.certKey) (empty .Values.kafka.tls.keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together (mutual TLS needs both)" }}
{{- end }}
{{- end }}

{{/*
Environment of the service's containers: call with (dict "ctx" $ "kafka" true|false).
*/}}
{{- define "oligocds.env" -}}
{{- $v := .ctx.Values -}}
- name: OLIGOCDS_HOST
  value: "0.0.0.0"
- name: OLIGOCDS_PORT
  value: "8080"
- name: OLIGOCDS_RULES_DIR
  value: {{ $v.rules.mountPath | quote }}
{{- range $key, $value := $v.settings }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
- name: {{ printf "OLIGOCDS_%s" (snakecase $key | upper) }}
  value: {{ include "oligocds.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- with $v.store.existingSecret }}
- name: OLIGOCDS_STORE_URL
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.store.key }}
{{- end }}
{{- with $v.cdsHooks.trustedIssuers.existingSecret }}
- name: OLIGOCDS_CDS_TRUSTED_ISSUERS
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $v.cdsHooks.trustedIssuers.key }}
{{- end }}
{{- if and .kafka $v.kafka.bootstrap }}
{{- include "oligocds.kafkaEnv" $v.kafka }}
{{- end }}
{{- with $v.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Kafka settings: call with .Values.kafka.
*/}}
{{- define "oligocds.kafkaEnv" }}
- name: OLIGOCDS_KAFKA_BOOTSTRAP
  value: {{ .bootstrap | quote }}
{{- range $topic := list "input" "output" "dlq" }}
{{- with index $.topics $topic }}
- name: {{ printf "OLIGOCDS_KAFKA_%s_TOPIC" (upper $topic) }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .groupId }}
- name: OLIGOCDS_KAFKA_GROUP_ID
  value: {{ . | quote }}
{{- end }}
{{- with .maxRecords }}
- name: OLIGOCDS_KAFKA_MAX_RECORDS
  value: {{ int64 . | quote }}
{{- end }}
{{- with .securityProtocol }}
- name: OLIGOCDS_KAFKA_SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- if .sasl.mechanism }}
- name: OLIGOCDS_KAFKA_SASL_MECHANISM
  value: {{ .sasl.mechanism | quote }}
- name: OLIGOCDS_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .sasl.existingSecret }}
      key: {{ .sasl.usernameKey }}
- name: OLIGOCDS_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .sasl.existingSecret }}
      key: {{ .sasl.passwordKey }}
{{- end }}
{{- if .tls.existingSecret }}
{{- with .tls.caKey }}
- name: OLIGOCDS_KAFKA_SSL_CAFILE
  value: {{ printf "%s/%s" $.tls.mountPath . | quote }}
{{- end }}
{{- with .tls.certKey }}
- name: OLIGOCDS_KAFKA_SSL_CERTFILE
  value: {{ printf "%s/%s" $.tls.mountPath . | quote }}
- name: OLIGOCDS_KAFKA_SSL_KEYFILE
  value: {{ printf "%s/%s" $.tls.mountPath $.tls.keyKey | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Volumes of the service's pods: call with (dict "ctx" $ "kafka" true|false).
*/}}
{{- define "oligocds.volumes" -}}
{{- $v := .ctx.Values -}}
- name: tmp
  {{- $emptyDir := dict }}
  {{- with $v.tmpDir.medium }}{{ $_ := set $emptyDir "medium" . }}{{ end }}
  {{- with $v.tmpDir.sizeLimit }}{{ $_ := set $emptyDir "sizeLimit" . }}{{ end }}
  emptyDir:
    {{- toYaml $emptyDir | nindent 4 }}
- name: rules
  configMap:
    name: {{ include "oligocds.rulesConfigMapName" .ctx }}
{{- with $v.cdsHooks.jwks.existingSecret }}
- name: jwks
  secret:
    secretName: {{ . }}
{{- end }}
{{- if and .kafka $v.kafka.bootstrap $v.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ $v.kafka.tls.existingSecret }}
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Volume mounts matching oligocds.volumes. The rules folder is mounted whole (no subPath), so ConfigMap updates
reach the pod and the service's hot reload.
*/}}
{{- define "oligocds.volumeMounts" -}}
{{- $v := .ctx.Values -}}
- name: tmp
  mountPath: /tmp
- name: rules
  mountPath: {{ $v.rules.mountPath }}
  readOnly: true
{{- if $v.cdsHooks.jwks.existingSecret }}
- name: jwks
  mountPath: {{ $v.cdsHooks.jwks.mountPath }}
  readOnly: true
{{- end }}
{{- if and .kafka $v.kafka.bootstrap $v.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: {{ $v.kafka.tls.mountPath }}
  readOnly: true
{{- end }}
{{- with $v.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
