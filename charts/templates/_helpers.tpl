{{/* The release's name, or release-chart when the release name does not hold the chart's. */}}
{{- define "pouw.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 54 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 54 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pouw.operatorName" -}}
{{- printf "%s-operator" (include "pouw.fullname" .) -}}
{{- end -}}

{{- define "pouw.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pouw
{{- end -}}

{{/* What the operator's Deployment, Service and NetworkPolicy select its pod by. */}}
{{- define "pouw.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The ServiceAccount of node pods in each served namespace: no Role, no token mounted. */}}
{{- define "pouw.nodeServiceAccount" -}}
{{- printf "%s-node" (include "pouw.fullname" .) -}}
{{- end -}}

{{- define "pouw.operatorLabels" -}}
{{ include "pouw.labels" . }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* The namespaces the operator serves: operator.watchNamespaces, else the release's. */}}
{{- define "pouw.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- toJson .Values.operator.watchNamespaces -}}
{{- else -}}
{{- toJson (list .Release.Namespace) -}}
{{- end -}}
{{- end -}}

{{- define "pouw.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* The label every node pod carries (operator/pouw_operator/builders/naming.py: NAME_LABEL, APP_NAME). */}}
{{- define "pouw.nodeSelectorLabels" -}}
app.kubernetes.io/name: pouw-node
{{- end -}}
