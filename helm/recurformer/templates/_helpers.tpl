{{/* Chart name, overridable. */}}
{{- define "recurformer.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped name of every resource: the release name alone when it already contains the chart name. */}}
{{- define "recurformer.fullname" -}}
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

{{- define "recurformer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every resource. */}}
{{- define "recurformer.labels" -}}
helm.sh/chart: {{ include "recurformer.chart" . }}
{{ include "recurformer.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the server pods. */}}
{{- define "recurformer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "recurformer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "recurformer.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "recurformer.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding the API key: the existing one (checked against the cluster when Helm can see it) or the chart's. */}}
{{- define "recurformer.apiKeySecretName" -}}
{{- if .Values.apiKey.existingSecret }}
{{- .Values.apiKey.existingSecret }}
{{- else }}
{{- printf "%s-api-key" (include "recurformer.fullname" .) }}
{{- end }}
{{- end }}

{{/* RECURFORMER__Model__Path: empty for the model baked into the image, else mountPath[/subPath]. */}}
{{- define "recurformer.modelPath" -}}
{{- if ne .Values.model.source "image" }}
{{- if .Values.model.subPath }}
{{- printf "%s/%s" (trimSuffix "/" .Values.model.mountPath) (trimPrefix "/" .Values.model.subPath) }}
{{- else }}
{{- .Values.model.mountPath }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod grace period: preStop sleep + the server's drain + 15 s for the host to stop after draining. */}}
{{- define "recurformer.terminationGracePeriodSeconds" -}}
{{- add .Values.server.preStopSleepSeconds .Values.server.drainGracePeriodSeconds 15 }}
{{- end }}

{{/* Default KEDA query: requests waiting, summed over this release's pods (job label set by the ServiceMonitor or by deploy/prometheus). */}}
{{- define "recurformer.kedaQuery" -}}
{{- if .Values.keda.query }}
{{- .Values.keda.query }}
{{- else }}
{{- printf "sum(recurformer_requests_waiting{job=\"recurformer\",namespace=\"%s\",pod=~\"%s-.*\"})" .Release.Namespace (include "recurformer.fullname" .) }}
{{- end }}
{{- end }}
