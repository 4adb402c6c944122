{{/* The objects mirror src/loopml/deploy/manifests.py; tests/deploy renders both and compares them. */}}
{{- define "loopml.labels" -}}
app.kubernetes.io/name: loopml
app.kubernetes.io/instance: {{ .root.Values.nameOverride | quote }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "loopml.image" -}}
{{ printf "%s:%s" .Values.image.repository (toString (.Values.image.tag | default .Chart.AppVersion)) }}
{{- end }}

{{/* Credentials by reference to the existing Secret: never a value in a manifest. */}}
{{- define "loopml.env" -}}
{{- $p := .Values.platform }}
- name: LOOPML_HOME
  value: /var/lib/loopml
- name: HOME
  value: /var/lib/loopml
- name: TMPDIR
  value: /tmp
{{- if $p.trackingUri }}
- name: LOOPML_TRACKING_URI
  value: {{ $p.trackingUri | quote }}
{{- end }}
{{- if $p.s3EndpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ $p.s3EndpointUrl | quote }}
{{- end }}
{{- if $p.region }}
- name: AWS_REGION
  value: {{ $p.region | quote }}
{{- end }}
{{- $s := .Values.secrets }}
{{- $name := required "secrets.existingSecret: name the Secret holding the admin token, database URL and S3 keys" $s.existingSecret }}
{{- range $env, $key := dict "LOOPML_ADMIN_TOKEN" $s.adminTokenKey "LOOPML_STATE_URI" $s.stateUriKey "AWS_ACCESS_KEY_ID" $s.awsAccessKeyIdKey "AWS_SECRET_ACCESS_KEY" $s.awsSecretAccessKeyKey }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ $name | quote }}
      key: {{ $key | quote }}
{{- end }}
{{- end }}

{{- define "loopml.containerSecurity" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "loopml.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "loopml.mounts" -}}
- name: home
  mountPath: /var/lib/loopml
- name: tmp
  mountPath: /tmp
- name: project
  mountPath: /etc/loopml/project
  readOnly: true
{{- end }}

{{- define "loopml.volumes" -}}
- name: home
  emptyDir: {}
- name: tmp
  emptyDir: {}
- name: project
  configMap:
    name: {{ .Values.nameOverride }}-project
{{- end }}

{{- define "loopml.checks" -}}
{{- $drain := add .Values.serving.drainSeconds .Values.serving.preStopSleepSeconds }}
{{- range $part := list "server" "controller" }}
{{- if le (int (index $.Values $part).terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "%s.terminationGracePeriodSeconds must be longer than serving.drainSeconds + preStopSleepSeconds (%d)" $part (int $drain)) }}
{{- end }}
{{- end }}
{{- if eq (int .Values.serving.port) (int .Values.serving.grpcPort) }}
{{- fail "serving.grpcPort: must differ from serving.port" }}
{{- end }}
{{- end }}
