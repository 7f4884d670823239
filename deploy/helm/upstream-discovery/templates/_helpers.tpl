{{/* Chart name, at most 63 characters. */}}
{{- define "upstream-discovery.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name when it already contains the chart name. */}}
{{- define "upstream-discovery.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "upstream-discovery.selectorLabels" -}}
app.kubernetes.io/name: {{ include "upstream-discovery.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "upstream-discovery.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "upstream-discovery.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: discovery
app.kubernetes.io/part-of: gloo
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "upstream-discovery.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "upstream-discovery.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where Upstreams are written in the fixed mode. */}}
{{- define "upstream-discovery.writeNamespace" -}}
{{- default .Release.Namespace .Values.discovery.writeNamespace -}}
{{- end -}}

{{- define "upstream-discovery.leaseName" -}}
{{- default (include "upstream-discovery.fullname" .) .Values.discovery.leaderElection.leaseName -}}
{{- end -}}

{{/* "true" when function discovery (AWS Lambda) is on: fdsMode is not DISABLED. */}}
{{- define "upstream-discovery.fds" -}}
{{- if ne .Values.discovery.fdsMode "DISABLED" -}}true{{- end -}}
{{- end -}}

{{- define "upstream-discovery.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The daemon's command line after the binary (the image's ENTRYPOINT), one flag a line. */}}
{{- define "upstream-discovery.args" -}}
{{- $d := .Values.discovery -}}
- "run"
{{- if and (eq $d.writeNamespaceMode "fixed") $d.writeNamespace }}
- {{ printf "--write-namespace=%s" $d.writeNamespace | toJson }}
{{- end }}
- {{ printf "--write-namespace-mode=%s" $d.writeNamespaceMode | toJson }}
{{- if $d.watchNamespaces }}
- {{ printf "--watch-namespaces=%s" (join "," $d.watchNamespaces) | toJson }}
{{- end }}
{{- if $d.namespaceSelector }}
- {{ printf "--namespace-selector=%s" $d.namespaceSelector | toJson }}
{{- end }}
{{- if $d.serviceSelector }}
- {{ printf "--service-selector=%s" $d.serviceSelector | toJson }}
{{- end }}
{{- range $key, $value := $d.globalAnnotations }}
- {{ printf "--global-annotations=%s=%s" $key $value | toJson }}
{{- end }}
- {{ printf "--resync-interval=%s" $d.resyncInterval | toJson }}
- {{ printf "--kube-api-qps=%d" (int $d.kubeApiQps) | toJson }}
- {{ printf "--kube-api-burst=%d" (int $d.kubeApiBurst) | toJson }}
- {{ printf "--write-concurrency=%d" (int $d.writeConcurrency) | toJson }}
- {{ printf "--metrics-addr=0.0.0.0:%d" (int .Values.metrics.port) | toJson }}
- {{ printf "--leader-elect=%t" $d.leaderElection.enabled | toJson }}
{{- if $d.leaderElection.enabled }}
- {{ printf "--lease-name=%s" (include "upstream-discovery.leaseName" .) | toJson }}
{{- end }}
{{- if $d.dryRun }}
- "--dry-run"
{{- end }}
- {{ printf "--log-level=%s" $d.logLevel | toJson }}
- {{ printf "--log-format=%s" $d.logFormat | toJson }}
{{- /* Always passed: the daemon's default is WHITELIST, so DISABLED has to be said. */}}
- {{ printf "--fds-mode=%s" $d.fdsMode | toJson }}
{{- if include "upstream-discovery.fds" . }}
- {{ printf "--lambda-poll-interval=%s" $d.lambda.pollInterval | toJson }}
- {{ printf "--lambda-api-rps=%d" (int $d.lambda.apiRps) | toJson }}
{{- if $d.lambda.aliases }}
- "--lambda-aliases"
{{- end }}
{{- if $d.lambda.maxFunctions }}
- {{ printf "--lambda-max-functions=%d" (int $d.lambda.maxFunctions) | toJson }}
{{- end }}
{{- end }}
{{- range .Values.extraArgs }}
- {{ . | toJson }}
{{- end }}
{{- end -}}
