{{/* Chart name, truncated to the 63 characters a DNS label allows. */}}
{{- define "fluxserve-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: release-chart, unless the release name already contains the chart name.
Truncated to 63 characters because some Kubernetes name fields are DNS labels.
*/}}
{{- define "fluxserve-operator.fullname" -}}
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

{{/* Name of a derived object: fullname truncated so that the suffix still fits. */}}
{{- define "fluxserve-operator.suffixed" -}}
{{- $full := include "fluxserve-operator.fullname" .root }}
{{- printf "%s-%s" ($full | trunc (int (sub 62 (len .suffix))) | trimSuffix "-") .suffix }}
{{- end }}

{{- define "fluxserve-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "fluxserve-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fluxserve-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "fluxserve-operator.labels" -}}
helm.sh/chart: {{ include "fluxserve-operator.chart" . }}
{{ include "fluxserve-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ include "fluxserve-operator.tag" . | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: fluxserve
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The image tag: the value if given, else the chart's appVersion (the release's git tag). */}}
{{- define "fluxserve-operator.tag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "fluxserve-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "fluxserve-operator.tag" .) }}
{{- end }}
{{- end }}

{{- define "fluxserve-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "fluxserve-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "fluxserve-operator.peeringName" -}}
{{- default (include "fluxserve-operator.fullname" .) .Values.leaderElection.peeringName }}
{{- end }}
