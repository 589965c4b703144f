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
{{- if .Values.auth.enabled }}
- name: TUNER_SERVICE_AUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "tuner-service.authSecretName" . }}
      key: {{ .Values.auth.secretKey }}
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
  mountPath: {{ .Values.userCode.mountPath }}
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
