#!/usr/bin/env bash
# End to end on a throwaway kind cluster:
#   build both images (the server on a CPU base) and load them into kind,
#   helm install the operator chart, write the tiny random-weight model to a PVC,
#   apply a CPU FluxDeployment, wait for Ready, POST /generate through a port-forward,
#   roll out a release whose image does not exist and watch the operator roll it back,
#   run the operator's cluster scenarios (pytest -m e2e), tear the cluster down.
#
# Needs docker (CLI and a running engine), kind, helm and kubectl (`make tools` puts
# pinned helm/kubectl in .tools/bin). Without them it says what is missing and exits 2.
#
# Environment: E2E_CLUSTER (fluxserve-e2e), E2E_KEEP=1 keeps the cluster,
# E2E_TIMEOUT seconds to wait for each condition (900), PY (.venv/bin/python).
set -euo pipefail

case "${BASH_SOURCE[0]}" in
    */*) here="${BASH_SOURCE[0]%/*}" ;;
    *) here="." ;;
esac
ROOT="$(cd "${here}/../.." && pwd)"
TOOLS_BIN="${TOOLS_BIN:-.tools/bin}"
[[ "${TOOLS_BIN}" = /* ]] || TOOLS_BIN="${ROOT}/${TOOLS_BIN}"
PATH="${TOOLS_BIN}:${PATH}"
PY="${PY:-${ROOT}/.venv/bin/python}"
CLUSTER="${E2E_CLUSTER:-fluxserve-e2e}"
TIMEOUT="${E2E_TIMEOUT:-900}"
REGISTRY="localhost/fluxserve"
TAG="v0.0.0-e2e"
BAD_TAG="v0.0.0-e2e-missing"  # never built: its pods cannot start
NS="fluxserve-e2e"
FXD="tiny"

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

# --- prerequisites ---------------------------------------------------------------------
missing=()
for tool in docker kind helm kubectl curl; do
    command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool}")
done
if command -v docker >/dev/null 2>&1 && ! docker info >/dev/null 2>&1; then
    missing+=("a running Docker engine (docker info fails)")
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    printf 'e2e: cannot run, missing: %s\n' "${missing[*]}" >&2
    echo "e2e: helm and kubectl come from 'make tools'; install Docker and kind (https://kind.sigs.k8s.io)." >&2
    exit 2
fi

cd "${ROOT}"
work="$(mktemp -d)"
export KUBECONFIG="${work}/kubeconfig"
pf_pid=""

teardown() {
    local rc=$?
    [[ -n "${pf_pid}" ]] && kill "${pf_pid}" 2>/dev/null || true
    if [[ ${rc} -ne 0 ]]; then
        log "failed (exit ${rc}): state of the cluster"
        kubectl get fxd,deploy,pods,svc,cm -n "${NS}" -o wide 2>/dev/null || true
        kubectl describe fxd "${FXD}" -n "${NS}" 2>/dev/null | tail -40 || true
        kubectl logs -n fluxserve-system deploy/fluxserve-operator --tail=80 2>/dev/null || true
    fi
    if [[ "${E2E_KEEP:-0}" == "1" ]]; then
        echo "e2e: keeping cluster ${CLUSTER} (KUBECONFIG=${KUBECONFIG})"
    else
        kind delete cluster --name "${CLUSTER}" >/dev/null 2>&1 || true
        rm -rf "${work}"
    fi
    exit "${rc}"
}
trap teardown EXIT

wait_for() {  # wait_for DESCRIPTION COMMAND...: poll until COMMAND succeeds or TIMEOUT
    local what="$1" deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < deadline )) || die "timed out after ${TIMEOUT}s waiting for ${what}"
        sleep 3
    done
}

fxd_field() { kubectl get fxd "${FXD}" -n "${NS}" -o "jsonpath=$1"; }
phase_is() { [[ "$(fxd_field '{.status.phase}')" == "$1" ]]; }
no_operator_pods() {
    [[ -z "$(kubectl get pods -n fluxserve-system -l app.kubernetes.io/name=fluxserve-operator -o name)" ]]
}

# --- cluster and images ------------------------------------------------------------------
log "kind cluster ${CLUSTER}"
kind create cluster --name "${CLUSTER}" --kubeconfig "${KUBECONFIG}" --wait 180s

log "images ${REGISTRY}/fluxserve-{operator,server}:${TAG} (server on a CPU base)"
TAG="${TAG}" REGISTRY="${REGISTRY}" \
    SERVER_BUILD_ARGS="--build-arg CUDA_IMAGE=ubuntu:24.04 --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" \
    hack/build-images.sh
kind load docker-image --name "${CLUSTER}" \
    "${REGISTRY}/fluxserve-operator:${TAG}" "${REGISTRY}/fluxserve-server:${TAG}"

# --- the operator, from the chart ----------------------------------------------------------
log "helm install the operator"
helm install fluxserve-operator charts/fluxserve-operator \
    --namespace fluxserve-system --create-namespace \
    --set image.repository="${REGISTRY}/fluxserve-operator" --set image.tag="${TAG}" \
    --wait --timeout 5m
kubectl get crd fluxdeployments.fluxserve.dev

# --- the tiny model on a PVC ------------------------------------------------------------------
log "tiny random-weight model on a PVC"
kubectl create namespace "${NS}"
kubectl apply -n "${NS}" -f - <<YAML
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: tiny-model
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 1Gi
---
apiVersion: batch/v1
kind: Job
metadata:
  name: write-tiny-model
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      securityContext:
        fsGroup: 10001
      containers:
        - name: write
          image: ${REGISTRY}/fluxserve-server:${TAG}
          imagePullPolicy: IfNotPresent
          command: ["python3", "-m", "flux_server.tiny_model", "/models/tiny"]
          volumeMounts:
            - name: models
              mountPath: /models
      volumes:
        - name: models
          persistentVolumeClaim:
            claimName: tiny-model
YAML
kubectl wait -n "${NS}" job/write-tiny-model --for=condition=Complete --timeout="${TIMEOUT}s"

# --- a FluxDeployment on CPU ------------------------------------------------------------------
log "FluxDeployment ${FXD} at ${TAG}"
kubectl apply -n "${NS}" -f - <<YAML
apiVersion: fluxserve.dev/v1alpha1
kind: FluxDeployment
metadata:
  name: ${FXD}
spec:
  release: ${TAG}
  image: ${REGISTRY}/fluxserve-server
  imagePullPolicy: IfNotPresent
  model:
    id: tiny-flux
    dtype: float32
    source:
      pvc:
        claimName: tiny-model
        subPath: tiny
  replicas: 1
  gpu:
    count: 0
  resources:
    cpu: "2"
    memory: 4Gi
    shmSize: 256Mi
  rollout:
    # Long enough for the tiny model to load and warm up on a laptop's CPU, short
    # enough that the bad release below is rolled back within a few minutes.
    progressDeadlineSeconds: 300
    autoRollback: true
YAML
wait_for "phase Ready" phase_is Ready
kubectl get fxd "${FXD}" -n "${NS}"

log "POST /generate through a port-forward"
kubectl port-forward -n "${NS}" "svc/${FXD}" 18080:8080 >"${work}/port-forward.log" 2>&1 &
pf_pid=$!
wait_for "the port-forward" curl -fsS http://127.0.0.1:18080/readyz
curl -fsS -X POST http://127.0.0.1:18080/generate \
    -H 'Content-Type: application/json' \
    -d '{"prompt": "a lighthouse at dusk", "width": 256, "height": 256, "steps": 2, "seed": 7}' \
    -o "${work}/out.png" -D "${work}/headers.txt"
[[ "$(head -c 8 "${work}/out.png" | od -An -tx1 | tr -d ' \n')" == "89504e470d0a1a0a" ]] \
    || die "/generate did not return a PNG"
echo "generated a PNG of $(wc -c <"${work}/out.png") bytes; $(grep -i '^x-request-id' "${work}/headers.txt" || true)"
kill "${pf_pid}" && pf_pid=""

# --- a bad release, rolled back -------------------------------------------------------------------
log "roll out ${BAD_TAG} (no such image) and watch it roll back"
kubectl patch fxd "${FXD}" -n "${NS}" --type merge -p "{\"spec\":{\"release\":\"${BAD_TAG}\"}}"
wait_for "phase RolledBack" phase_is RolledBack
[[ "$(fxd_field '{.status.currentRelease}')" == "${TAG}" ]] || die "currentRelease is not ${TAG}"
[[ "$(fxd_field '{.status.conditions[?(@.type=="RolledBack")].status}')" == "True" ]] \
    || die "no RolledBack=True condition"
wait_for "the restored pods to be ready" \
    kubectl rollout status -n "${NS}" "deployment/${FXD}" --timeout=10s
fxd_field '{range .status.history[*]}{.revision}{"\t"}{.release}{"\t"}{.outcome}{"\n"}{end}'

# --- the operator's scenarios against this cluster ---------------------------------------------------
log "operator scenarios against the cluster (pytest -m e2e)"
# The scenarios run their own operator (and stop and restart it): the chart's must not
# act on their FluxDeployments meanwhile.
kubectl scale -n fluxserve-system deployment/fluxserve-operator --replicas=0
wait_for "the chart's operator to stop" no_operator_pods
set +e
FLUXSERVE_E2E_KUBECONFIG="${KUBECONFIG}" "${PY}" -m pytest -q -m e2e -p no:cacheprovider tests
rc=$?
set -e
# 5: no test carries the e2e marker, which is not a failure of this run.
[[ ${rc} -eq 0 || ${rc} -eq 5 ]] || die "pytest -m e2e failed (${rc})"

log "e2e passed"
