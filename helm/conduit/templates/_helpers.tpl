{{/* Chart name, overridable with nameOverride. */}}
{{- define "conduit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Prefix of every object name: "<release>-<chart>", or the release name when it already contains the chart name. */}}
{{- define "conduit.fullname" -}}
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

{{/* Labels that select one component's pods: pass (dict "ctx" $ "component" "proxy"). */}}
{{- define "conduit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conduit.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Standard labels for every object: pass (dict "ctx" $ "component" "proxy"). */}}
{{- define "conduit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "conduit.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: conduit
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
{{- end }}

{{- define "conduit.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{- define "conduit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "conduit.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "conduit.tenantsDir" -}}/etc/conduit/tenants{{- end }}

{{/* CONDUIT_DATABASE_URL / CONDUIT_REDIS_URL: plain value, or a reference to a Secret key. Pass (dict "ctx" $ "name" ENV "store" .Values.database). */}}
{{- define "conduit.urlEnv" -}}
- name: {{ .name }}
{{- if .store.url }}
  value: {{ .store.url | quote }}
{{- else }}
  valueFrom:
    secretKeyRef:
      name: {{ .store.existingSecret | default .ctx.Values.secrets.existingSecret }}
      key: {{ .store.existingSecretKey }}
{{- end }}
{{- end }}

{{/* Settings as environment variables: each key of .settings becomes .prefix + the key in upper snake case.
Pass (dict "prefix" "CONDUIT_PROXY_" "settings" .Values.proxy.config). null leaves a variable unset; lists and
maps are JSON (as pydantic-settings reads them); whole numbers are printed as integers, since Helm reads every
number as a float and would print 1048576 as 1.048576e+06. */}}
{{- define "conduit.settingsEnv" -}}
{{- range $key, $value := .settings }}
{{- if not (kindIs "invalid" $value) }}
- name: {{ printf "%s%s" $.prefix ($key | snakecase | upper) }}
{{- if or (kindIs "slice" $value) (kindIs "map" $value) }}
  value: {{ toJson $value | quote }}
{{- else if and (kindIs "float64" $value) (eq $value (floor $value)) }}
  value: {{ $value | int64 | quote }}
{{- else }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by the proxy, the importers and the scheduler. */}}
{{- define "conduit.env" -}}
{{ include "conduit.urlEnv" (dict "ctx" . "name" "CONDUIT_REDIS_URL" "store" .Values.redis) }}
{{ include "conduit.urlEnv" (dict "ctx" . "name" "CONDUIT_DATABASE_URL" "store" .Values.database) }}
- name: CONDUIT_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.tokenKeyKey }}
- name: CONDUIT_TOKEN_KEY_OLD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secrets.existingSecret }}
      key: {{ .Values.secrets.tokenKeyOldKey }}
      # Absent outside a rotation: the variable is then unset, not empty.
      optional: true
- name: CONDUIT_TENANTS_FILE
  value: {{ include "conduit.tenantsDir" . }}/tenants.yaml
{{- if .Values.redis.caConfigMap }}
- name: CONDUIT_REDIS_CA_FILE
  value: /etc/conduit/redis-ca/{{ .Values.redis.caKey }}
{{- end }}
- name: CONDUIT_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: CONDUIT_PROXY_URL
  value: http://{{ include "conduit.fullname" . }}-proxy:{{ .Values.proxy.service.port }}
{{- include "conduit.settingsEnv" (dict "prefix" "CONDUIT_" "settings" .Values.config) }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Volumes shared by the proxy, the importers and the scheduler. */}}
{{- define "conduit.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: tenants
  configMap:
    name: {{ include "conduit.fullname" . }}-tenants
{{- with .Values.clientSecrets.existingSecret }}
- name: client-secrets
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.redis.caConfigMap }}
- name: redis-ca
  configMap:
    name: {{ . }}
{{- end }}
{{- end }}

{{- define "conduit.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: tenants
  mountPath: {{ include "conduit.tenantsDir" . }}
  readOnly: true
{{- if .Values.clientSecrets.existingSecret }}
- name: client-secrets
  mountPath: {{ .Values.clientSecrets.mountPath }}
  readOnly: true
{{- end }}
{{- if .Values.redis.caConfigMap }}
- name: redis-ca
  mountPath: /etc/conduit/redis-ca
  readOnly: true
{{- end }}
{{- end }}

{{/* Pod annotations: the user's, plus a checksum that rolls the pods when the tenants file changes. */}}
{{- define "conduit.podAnnotations" -}}
checksum/tenants: {{ toYaml .Values.tenants.config | sha256sum }}
{{- with .Values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every Deployment. */}}
{{- define "conduit.podSpec" -}}
serviceAccountName: {{ include "conduit.serviceAccountName" . }}
automountServiceAccountToken: false
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
