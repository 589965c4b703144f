{{/*
Names
*/}}

{{/* Chart name (app.kubernetes.io/name). */}}
{{- define "tuner-service.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name, the prefix of every resource. Truncated to 50 characters so that
suffixed names ("-worker", "-dashboard") stay within the 63-character DNS label limit.
*/}}
{{- define "tuner-service.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version (helm.sh/chart). */}}
{{- define "tuner-service.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Namespace of every resource. */}}
{{- define "tuner-service.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tuner-service.chief.fullname" -}}
{{- printf "%s-chief" (include "tuner-service.fullname" .) }}
{{- end }}

{{- define "tuner-service.worker.fullname" -}}
{{- printf "%s-worker" (include "tuner-service.fullname" .) }}
{{- end }}

{{/* Fully qualified DNS name of the chief Service: what workers use as KERASTUNER_ORACLE_IP. */}}
{{- define "tuner-service.chief.host" -}}
{{- printf "%s.%s.svc.%s" (include "tuner-service.chief.fullname" .) (include "tuner-service.namespace" .) .Values.clusterDomain }}
{{- end }}

{{- define "tuner-service.studyConfigMapName" -}}
{{- printf "%s-study" (include "tuner-service.fullname" .) }}
{{- end }}

{{- define "tuner-service.claimName" -}}
{{- default (printf "%s-data" (include "tuner-service.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{- define "tuner-service.authSecretName" -}}
{{- default (printf "%s-auth" (include "tuner-service.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "tuner-service.chief.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuner-service.chief.fullname" .) .Values.serviceAccount.chiefName }}
{{- else }}
{{- default "default" .Values.serviceAccount.chiefName }}
{{- end }}
{{- end }}

{{- define "tuner-service.worker.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tuner-service.worker.fullname" .) .Values.serviceAccount.workerName }}
{{- else }}
{{- default "default" .Values.serviceAccount.workerName }}
{{- end }}
{{- end }}

{{/* Labels that mark a client pod allowed on the oracle and status ports. */}}
{{- define "tuner-service.clientPodLabels" -}}
{{- if .Values.networkPolicy.clientPodLabels }}
{{- toYaml .Values.networkPolicy.clientPodLabels }}
{{- else }}
{{ include "tuner-service.fullname" . }}-client: "true"
{{- end }}
{{- end }}

{{/*
Labels
*/}}

{{- define "tuner-service.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tuner-service.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tuner-service.labels" -}}
helm.sh/chart: {{ include "tuner-service.chart" . }}
{{ include "tuner-service.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tuner-service
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: include with (dict "ctx" $ "component" "chief"). */}}
{{- define "tuner-service.componentSelectorLabels" -}}
{{ include "tuner-service.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "tuner-service.componentLabels" -}}
{{ include "tuner-service.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* metadata.namespace plus the common annotations (if any). */}}
{{- define "tuner-service.metadata" -}}
namespace: {{ include "tuner-service.namespace" . }}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A Job's metadata.namespace and annotations: the common ones, plus, with the permissions init
container, checkov's inline skip of "added capability" with its reason (what it adds is CAP_CHOWN,
on purpose, in that one init container).
*/}}
{{- define "tuner-service.jobMetadata" -}}
{{- $annotations := deepCopy (default (dict) .Values.commonAnnotations) }}
{{- if .Values.persistence.fixPermissions }}
{{- $_ := set $annotations "checkov.io/skip1" (include "tuner-service.fixPermissions.checkovSkip" .) }}
{{- end }}
namespace: {{ include "tuner-service.namespace" . }}
{{- with $annotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{- define "tuner-service.fixPermissions.checkovSkip" -}}
CKV_K8S_25=the fix-permissions init container adds CAP_CHOWN, and only it, to give the shared volume to the pods' user
{{- end }}

{{/*
Image
*/}}

{{- define "tuner-service.imageVariant" -}}
{{- if .Values.image.variant }}
{{- .Values.image.variant }}
{{- else if .Values.worker.gpu.enabled }}
{{- "gpu" }}
{{- else }}
{{- "cpu" }}
{{- end }}
{{- end }}

{{- define "tuner-service.image" -}}
{{- $repo := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repo = printf "%s/%s" (trimSuffix "/" .Values.image.registry) .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- $tag := default (printf "%s-%s" .Chart.AppVersion (include "tuner-service.imageVariant" .)) .Values.image.tag }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}
{{- end }}

{{/*
Pod pieces shared by the chief and the workers
*/}}

{{/* Checks that fail the render with a clear message (what the JSON schema cannot express). */}}
{{- define "tuner-service.validate" -}}
{{- $mount := trimSuffix "/" .Values.persistence.mountPath }}
{{- $dir := .Values.study.directory }}
{{- if not (or (eq $dir $mount) (hasPrefix (printf "%s/" $mount) $dir)) }}
{{- fail (printf "study.directory (%s) must lie under persistence.mountPath (%s): it is the shared storage of the chief and the workers" $dir $mount) }}
{{- end }}
{{- if and .Values.metrics.enabled (has (int .Values.metrics.port) (list (int .Values.chief.ports.oracle) (int .Values.chief.ports.status))) }}
{{- fail "metrics.port must differ from chief.ports.oracle and chief.ports.status" }}
{{- end }}
{{- if eq (int .Values.chief.ports.oracle) (int .Values.chief.ports.status) }}
{{- fail "chief.ports.oracle and chief.ports.status must differ" }}
{{- end }}
{{- if and .Values.tls.enabled (not .Values.tls.secretName) }}
{{- fail "tls.secretName is required with tls.enabled: a kubernetes.io/tls Secret (e.g. from a cert-manager Certificate) with tls.crt, tls.key and the CA" }}
{{- end }}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth.enabled needs tls.enabled: client certificates are checked in the TLS handshake, so the chief must serve TLS (set tls.enabled and tls.secretName)" }}
{{- end }}
{{- if and .Values.tls.clientAuth.enabled (not .Values.tls.clientAuth.secretName) }}
{{- fail "tls.clientAuth.secretName is required with tls.clientAuth.enabled: a kubernetes.io/tls Secret (e.g. from a cert-manager Certificate with usages [client auth]) with the workers' tls.crt, tls.key and the CA that signed them" }}
{{- end }}
{{- end }}

{{/* Environment common to every container. */}}
{{- define "tuner-service.commonEnv" -}}
- name: KERASTUNER_ORACLE_PORT
  value: {{ .Values.chief.ports.oracle | quote }}
- name: KERAS_HOME
  value: {{ .Values.kerasHome.mountPath | quote }}
- name: HOME
  value: /home/tuner
- name: TMPDIR
  value: /tmp
- name: MPLCONFIGDIR
  value: /tmp/matplotlib
- name: PYTHONUNBUFFERED
  value: "1"
- name: TF_CPP_MIN_LOG_LEVEL
  value: "1"
{{- if .Values.userCode.configMap }}
- name: PYTHONPATH
  value: {{ .Values.userCode.mountPath | quote }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: POD_UID
  valueFrom:
    fieldRef:
      fieldPath: metadata.uid
{{- end }}

{{/*
Auth and TLS (docs/security.md): Secrets mounted as files, never in env or args. Include with
(dict "ctx" $ "chief" true|false). The chief gets the token, the optional accepted tokens
(rotation; re-read when the kubelet updates the mount), its certificate and key; a worker gets
the token it sends and the CA it verifies the chief with, never the chief's key. With mutual TLS
(tls.clientAuth) the chief gets the client CA alone, a worker its client certificate and key.
*/}}
{{- define "tuner-service.secretsDir" -}}
/var/run/secrets/tuner-service
{{- end }}

{{- define "tuner-service.securityEnv" -}}
{{- $v := .ctx.Values }}
{{- $dir := include "tuner-service.secretsDir" .ctx }}
{{- if $v.auth.enabled }}
- name: TUNER_SERVICE_AUTH_TOKENS_FILE
  value: {{ if .chief }}{{ printf "%s/auth/token:%s/auth-accepted/accepted-tokens" $dir $dir | quote }}{{ else }}{{ printf "%s/auth/token" $dir | quote }}{{ end }}
{{- end }}
{{- if $v.tls.enabled }}
{{- if .chief }}
- name: TUNER_SERVICE_TLS_CERT
  value: {{ printf "%s/tls/tls.crt" $dir | quote }}
- name: TUNER_SERVICE_TLS_KEY
  value: {{ printf "%s/tls/tls.key" $dir | quote }}
{{- end }}
- name: TUNER_SERVICE_TLS_CA
  value: {{ printf "%s/tls/ca.crt" $dir | quote }}
{{- with $v.tls.serverName }}
- name: TUNER_SERVICE_TLS_SERVER_NAME
  value: {{ . | quote }}
{{- end }}
{{- if $v.tls.clientAuth.enabled }}
{{- if .chief }}
- name: TUNER_SERVICE_TLS_CLIENT_CA
  value: {{ printf "%s/tls-client-ca/ca.crt" $dir | quote }}
{{- else }}
- name: TUNER_SERVICE_TLS_CLIENT_CERT
  value: {{ printf "%s/tls-client/tls.crt" $dir | quote }}
- name: TUNER_SERVICE_TLS_CLIENT_KEY
  value: {{ printf "%s/tls-client/tls.key" $dir | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tuner-service.securityVolumeMounts" -}}
{{- $v := .ctx.Values }}
{{- $dir := include "tuner-service.secretsDir" .ctx }}
{{- if $v.auth.enabled }}
- name: auth
  mountPath: {{ $dir }}/auth
  readOnly: true
{{- if .chief }}
- name: auth-accepted
  mountPath: {{ $dir }}/auth-accepted
  readOnly: true
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
- name: tls
  mountPath: {{ $dir }}/tls
  readOnly: true
{{- if $v.tls.clientAuth.enabled }}
- name: {{ ternary "tls-client-ca" "tls-client" .chief }}
  mountPath: {{ $dir }}/{{ ternary "tls-client-ca" "tls-client" .chief }}
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{- define "tuner-service.securityVolumes" -}}
{{- $v := .ctx.Values }}
{{- if $v.auth.enabled }}
- name: auth
  secret:
    secretName: {{ include "tuner-service.authSecretName" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ $v.auth.secretKey }}
        path: token
{{- if .chief }}
- name: auth-accepted
  secret:
    secretName: {{ include "tuner-service.authSecretName" .ctx }}
    defaultMode: 0440
    optional: true
    items:
      - key: {{ $v.auth.acceptedTokensKey }}
        path: accepted-tokens
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
- name: tls
  secret:
    secretName: {{ $v.tls.secretName }}
    defaultMode: 0440
    items:
      {{- if .chief }}
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
      {{- end }}
      - key: {{ $v.tls.caKey }}
        path: ca.crt
{{- if $v.tls.clientAuth.enabled }}
{{- if .chief }}
- name: tls-client-ca
  secret:
    secretName: {{ default $v.tls.clientAuth.secretName $v.tls.clientAuth.caSecretName }}
    defaultMode: 0440
    items:
      - key: {{ $v.tls.clientAuth.caKey }}
        path: ca.crt
{{- else }}
- name: tls-client
  secret:
    secretName: {{ $v.tls.clientAuth.secretName }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Volume mounts common to every container. */}}
{{- define "tuner-service.volumeMounts" -}}
- name: study
  mountPath: /etc/tuner-service
  readOnly: true
- name: data
  mountPath: {{ .Values.persistence.mountPath }}
- name: keras-home
  mountPath: {{ .Values.kerasHome.mountPath }}
  {{- if .Values.kerasHome.existingClaim }}
  readOnly: true
  {{- end }}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /home/tuner
{{- if .Values.dataVolume.existingClaim }}
- name: study-data
  mountPath: {{ .Values.dataVolume.mountPath }}
  readOnly: true
{{- end }}
{{- if .Values.userCode.configMap }}
- name: user-code
  {{- if .Values.userCode.package }}
  mountPath: {{ printf "%s/%s" (trimSuffix "/" .Values.userCode.mountPath) .Values.userCode.package }}
  {{- else }}
  mountPath: {{ .Values.userCode.mountPath }}
  {{- end }}
  readOnly: true
{{- end }}
{{- end }}

{{/* Volumes common to every pod. */}}
{{- define "tuner-service.volumes" -}}
- name: study
  configMap:
    name: {{ include "tuner-service.studyConfigMapName" . }}
- name: data
  persistentVolumeClaim:
    claimName: {{ include "tuner-service.claimName" . }}
- name: keras-home
  {{- if .Values.kerasHome.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ .Values.kerasHome.existingClaim }}
    readOnly: true
  {{- else }}
  emptyDir:
    sizeLimit: {{ .Values.kerasHome.sizeLimit }}
  {{- end }}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: home
  emptyDir:
    sizeLimit: {{ .Values.scratch.homeSizeLimit }}
{{- if .Values.dataVolume.existingClaim }}
- name: study-data
  persistentVolumeClaim:
    claimName: {{ .Values.dataVolume.existingClaim }}
    readOnly: true
{{- end }}
{{- if .Values.userCode.configMap }}
- name: user-code
  configMap:
    name: {{ .Values.userCode.configMap }}
    {{- with .Values.userCode.items }}
    items:
      {{- toYaml . | nindent 6 }}
    {{- end }}
{{- end }}
{{- end }}

{{/* Pod-level fields common to every pod. */}}
{{- define "tuner-service.podCommon" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
enableServiceLinks: false
{{- end }}

{{/* Container resources with optional GPUs: include with (dict "resources" .. "gpu" .. "resourceName" ..). */}}
{{- define "tuner-service.resources" -}}
{{- $res := deepCopy .resources }}
{{- if .gpu.enabled }}
{{- $_ := set $res "limits" (merge (dict .resourceName (toString .gpu.count)) (default (dict) $res.limits)) }}
{{- $_ := set $res "requests" (merge (dict .resourceName (toString .gpu.count)) (default (dict) $res.requests)) }}
{{- end }}
{{- toYaml $res }}
{{- end }}

{{/*
Process contract (tuner_service exit codes) and signals
*/}}

{{/*
Exit codes the Jobs' podFailurePolicy acts on: 2 = bad input (the study file: fail the Job at
once), 3 = a worker gave up on an unreachable chief (chief_deadline), 143 = a worker stopped by
SIGTERM (128 + 15; it hands its trial back first). Neither 3 nor 143 is the worker's fault, so
neither counts against backoffLimitPerIndex. A worker must never exit 0 on SIGTERM: an index that
exits 0 is done for good, and successPolicy would complete the whole worker Job.
docs/kubernetes.md states the contract.
*/}}
{{- define "tuner-service.exitCode.usage" -}}2{{- end }}
{{- define "tuner-service.exitCode.chiefUnreachable" -}}3{{- end }}
{{- define "tuner-service.exitCode.stopped" -}}143{{- end }}

{{/* The container command: the init process (tini) in front of tuner-service. */}}
{{- define "tuner-service.command" -}}
{{- toJson (concat .Values.image.initProcess (list "tuner-service")) }}
{{- end }}

{{/*
The chief's grace period: chief.terminationGracePeriodSeconds, or max(60, linger + 30) when
null, so SIGKILL never cuts the metrics linger or the state save short.
*/}}
{{- define "tuner-service.chief.terminationGracePeriodSeconds" -}}
{{- $linger := ternary (int .Values.metrics.linger) 0 .Values.metrics.enabled }}
{{- $grace := .Values.chief.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $grace }}
{{- max 60 (add $linger 30) }}
{{- else if le (int $grace) $linger }}
{{- fail (printf "chief.terminationGracePeriodSeconds (%d) must exceed metrics.linger (%d): the chief would be SIGKILLed while it lingers" (int $grace) $linger) }}
{{- else }}
{{- int $grace }}
{{- end }}
{{- end }}

{{/* The chief's PriorityClass name: chief.priorityClassName, else the created one, else none. */}}
{{- define "tuner-service.createdPriorityClassName" -}}
{{- printf "%s-%s-chief" (include "tuner-service.namespace" .) (include "tuner-service.fullname" .) }}
{{- end }}

{{- define "tuner-service.chief.priorityClassName" -}}
{{- if .Values.chief.priorityClassName }}
{{- .Values.chief.priorityClassName }}
{{- else if .Values.priorityClass.create }}
{{- include "tuner-service.createdPriorityClassName" . }}
{{- end }}
{{- end }}

{{/*
The chief's affinity: chief.affinity plus, with chief.avoidSpot, "not on spot capacity" ANDed
into every required node-selector term (terms are ORed, so each one must carry the rule).
*/}}
{{- define "tuner-service.chief.affinity" -}}
{{- $affinity := deepCopy (default (dict) .Values.chief.affinity) }}
{{- $exprs := list }}
{{- if .Values.chief.avoidSpot }}
{{- range $key, $values := .Values.chief.spotNodeLabels }}
{{- $exprs = append $exprs (dict "key" $key "operator" "NotIn" "values" $values) }}
{{- end }}
{{- end }}
{{- if $exprs }}
{{- $node := default (dict) (get $affinity "nodeAffinity") }}
{{- $required := default (dict) (get $node "requiredDuringSchedulingIgnoredDuringExecution") }}
{{- $terms := default (list (dict)) (get $required "nodeSelectorTerms") }}
{{- $withRule := list }}
{{- range $terms }}
{{- $term := deepCopy . }}
{{- $_ := set $term "matchExpressions" (concat (default (list) (get $term "matchExpressions")) $exprs) }}
{{- $withRule = append $withRule $term }}
{{- end }}
{{- $_ := set $required "nodeSelectorTerms" $withRule }}
{{- $_ := set $node "requiredDuringSchedulingIgnoredDuringExecution" $required }}
{{- $_ := set $affinity "nodeAffinity" $node }}
{{- end }}
{{- with $affinity }}
{{- toYaml . }}
{{- end }}
{{- end }}

{{/*
Init containers of every pod: with persistence.fixPermissions, one that gives the volume root
and the folders down to study.directory to the pods' UID/GID (RWX volumes that ignore fsGroup).
It runs as root with CAP_CHOWN only; not recursive, so it is instant on a big study.
*/}}
{{- define "tuner-service.initContainers" -}}
{{- if .Values.persistence.fixPermissions }}
{{- $uid := default .Values.podSecurityContext.runAsUser .Values.containerSecurityContext.runAsUser }}
{{- $gid := default .Values.podSecurityContext.runAsGroup .Values.containerSecurityContext.runAsGroup }}
initContainers:
  - name: fix-permissions
    image: {{ include "tuner-service.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: ["/bin/sh", "-c"]
    args:
      - |
        set -eu
        dir="$STUDY_DIR"
        while :; do
          if [ -e "$dir" ]; then chown "$OWNER" "$dir"; fi
          if [ "$dir" = "$DATA_DIR" ] || [ "$dir" = / ]; then break; fi
          dir="$(dirname "$dir")"
        done
        ls -ldn "$DATA_DIR"
    env:
      - name: OWNER
        value: "{{ $uid }}:{{ $gid }}"
      - name: DATA_DIR
        value: {{ trimSuffix "/" .Values.persistence.mountPath | quote }}
      - name: STUDY_DIR
        value: {{ trimSuffix "/" .Values.study.directory | quote }}
    resources:
      requests: {cpu: 10m, memory: 16Mi, ephemeral-storage: 16Mi}
      limits: {cpu: 100m, memory: 64Mi, ephemeral-storage: 64Mi}
    securityContext:
      runAsUser: 0
      runAsGroup: 0
      runAsNonRoot: false
      privileged: false
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: ["ALL"]
        add: ["CHOWN"]
      seccompProfile:
        type: RuntimeDefault
    volumeMounts:
      - name: data
        mountPath: {{ .Values.persistence.mountPath }}
{{- end }}
{{- end }}
