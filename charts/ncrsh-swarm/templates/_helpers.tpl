{{/* Chart name, truncated to a label's 63 characters. */}}
{{- define "ncrsh-swarm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Resource name prefix: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "ncrsh-swarm.fullname" -}}
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

{{/* Labels of every object. */}}
{{- define "ncrsh-swarm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "ncrsh-swarm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ncrsh-swarm
{{- end }}

{{/* Labels that select the operator pod. */}}
{{- define "ncrsh-swarm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ncrsh-swarm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "ncrsh-swarm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ncrsh-swarm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespaced rules: what the operator does to SwarmTrainings and their children. */}}
{{- define "ncrsh-swarm.rules" -}}
- apiGroups: [swarm.ncrsh.io]
  resources: [swarmtrainings]
  verbs: [get, list, watch, patch, update, delete]
- apiGroups: [swarm.ncrsh.io]
  resources: [swarmtrainings/status]
  verbs: [get, patch, update]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [services, configmaps]
  verbs: [get, create]
# The job's CURVE keys: created once, never read back (a Secret that exists is kept as it is).
- apiGroups: [""]
  resources: [secrets]
  verbs: [create]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
