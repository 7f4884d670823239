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

{{/*
"true" when function discovery (AWS Lambda) may be on: fdsMode is not DISABLED. Empty counts as
on: the mode then comes from Settings (or the daemon's default, WHITELIST), which the chart
cannot see, so it grants what function discovery needs.
*/}}
{{- define "upstream-discovery.fds" -}}
{{- if ne (.Values.discovery.fdsMode | default "") "DISABLED" -}}true{{- end -}}
{{- end -}}

{{/* Replicas: Gloo's `discovery.deployment.replicas` when set, else `replicas`. */}}
{{- define "upstream-discovery.replicas" -}}
{{- $gloo := .Values.discovery.deployment | default dict -}}
{{- if kindIs "invalid" $gloo.replicas -}}
{{- int .Values.replicas -}}
{{- else -}}
{{- int $gloo.replicas -}}
{{- end -}}
{{- end -}}

{{/*
--service-selector: `serviceSelector`, or Gloo's `udsOptions.watchLabels` as an equality selector
(keys sorted, so the rendering is stable). Both set is a mistake: they are the same setting.
*/}}
{{- define "upstream-discovery.serviceSelector" -}}
{{- $d := .Values.discovery -}}
{{- $watchLabels := (($d.udsOptions | default dict).watchLabels) | default dict -}}
{{- if and $d.serviceSelector $watchLabels -}}
{{- fail "discovery.serviceSelector and discovery.udsOptions.watchLabels are both set: they are the same setting (--service-selector) under our name and Gloo's; keep one" -}}
{{- end -}}
{{- if $d.serviceSelector -}}
{{- $d.serviceSelector -}}
{{- else if $watchLabels -}}
{{- $pairs := list -}}
{{- range $key := keys $watchLabels | sortAlpha -}}
{{- $pairs = append $pairs (printf "%s=%s" $key (index $watchLabels $key)) -}}
{{- end -}}
{{- join "," $pairs -}}
{{- end -}}
{{- end -}}

{{/* --log-level: Gloo's zap levels above error (dpanic, panic, fatal) are error here. */}}
{{- define "upstream-discovery.logLevel" -}}
{{- $level := .Values.discovery.logLevel | default "" -}}
{{- if has $level (list "dpanic" "panic" "fatal") -}}error{{- else -}}{{- $level -}}{{- end -}}
{{- end -}}

{{/*
Pod and container security contexts with Gloo's `deployment.runAsUser`, `deployment.fsGroup` and
`deployment.floatingUserId` (true: the platform, e.g. OpenShift, assigns the IDs) applied.
*/}}
{{- define "upstream-discovery.podSecurityContext" -}}
{{- $context := deepCopy (.Values.podSecurityContext | default dict) -}}
{{- $gloo := .Values.discovery.deployment | default dict -}}
{{- if $gloo.floatingUserId -}}
{{- $_ := unset $context "runAsUser" -}}
{{- $_ := unset $context "runAsGroup" -}}
{{- $_ := unset $context "fsGroup" -}}
{{- else -}}
{{- if not (kindIs "invalid" $gloo.runAsUser) -}}
{{- $_ := set $context "runAsUser" (int64 $gloo.runAsUser) -}}
{{- end -}}
{{- if not (kindIs "invalid" $gloo.fsGroup) -}}
{{- $_ := set $context "fsGroup" (int64 $gloo.fsGroup) -}}
{{- end -}}
{{- end -}}
{{- if $context -}}{{- toYaml $context -}}{{- end -}}
{{- end -}}

{{- define "upstream-discovery.containerSecurityContext" -}}
{{- $context := deepCopy (.Values.securityContext | default dict) -}}
{{- $gloo := .Values.discovery.deployment | default dict -}}
{{- if $gloo.floatingUserId -}}
{{- $_ := unset $context "runAsUser" -}}
{{- $_ := unset $context "runAsGroup" -}}
{{- else if not (kindIs "invalid" $gloo.runAsUser) -}}
{{- $_ := set $context "runAsUser" (int64 $gloo.runAsUser) -}}
{{- end -}}
{{- if $context -}}{{- toYaml $context -}}{{- end -}}
{{- end -}}

{{- define "upstream-discovery.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The daemon's command line after the binary (the image's ENTRYPOINT), one flag a line. A flag
given on the command line wins over Settings, so the flags Settings also holds (write namespace,
watched namespaces, selectors, global annotations, fds mode, uds) are passed only when the value
is set here.
*/}}
{{- define "upstream-discovery.args" -}}
{{- $d := .Values.discovery -}}
{{- $settings := $d.settings | default dict -}}
{{- $uds := $d.udsOptions | default dict -}}
{{- $serviceSelector := include "upstream-discovery.serviceSelector" . -}}
{{- $logLevel := include "upstream-discovery.logLevel" . -}}
- "run"
{{- if not $settings.enabled }}
- "--read-settings=false"
{{- else if ne ($settings.name | default "default") "default" }}
- {{ printf "--settings-name=%s" $settings.name | toJson }}
{{- end }}
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
{{- /* Only false is passed: true is the default of the daemon and of Gloo's Settings. */}}
{{- if eq (toString $uds.enabled) "false" }}
- "--uds-enabled=false"
{{- end }}
{{- if $serviceSelector }}
- {{ printf "--service-selector=%s" $serviceSelector | toJson }}
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
{{- if $logLevel }}
- {{ printf "--log-level=%s" $logLevel | toJson }}
{{- end }}
- {{ printf "--log-format=%s" $d.logFormat | toJson }}
{{- if include "upstream-discovery.referenceGrants" . }}
- "--reference-grants"
- {{ printf "--reference-grant-kinds=%s" (join "," $d.referenceGrants.kinds) | toJson }}
{{- end }}
{{- if $d.fdsMode }}
- {{ printf "--fds-mode=%s" $d.fdsMode | toJson }}
{{- end }}
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

{{/*
"true" when the daemon keeps ReferenceGrants (discovery.referenceGrants.enabled), else empty;
refused with writeNamespaceMode `service`, where each Upstream sits beside its Service and no
grant is kept.
*/}}
{{- define "upstream-discovery.referenceGrants" -}}
{{- $grants := .Values.discovery.referenceGrants | default dict -}}
{{- if $grants.enabled -}}
{{- if eq .Values.discovery.writeNamespaceMode "service" -}}
{{- fail "discovery.referenceGrants.enabled needs writeNamespaceMode fixed: in service mode each Upstream sits beside its Service and routes there need no grant" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}
