#!/usr/bin/env bash
# Build the server and operator images, tagged with the release (a git tag).
#
#   TAG=v1.2.3 REGISTRY=ghcr.io/you hack/build-images.sh
#
# Optional: PUSH=1 pushes both; SERVER_BUILD_ARGS adds build arguments to the server
# image (e.g. "--build-arg CUDA_IMAGE=ubuntu:24.04 --build-arg
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" for a CPU image).
# Without a docker CLI and a Docker engine it says which is missing and fails.
set -euo pipefail

TAG="${TAG:?set TAG, e.g. TAG=v1.2.3}"
REGISTRY="${REGISTRY:-ghcr.io/fluxserve}"
PUSH="${PUSH:-0}"
SERVER_BUILD_ARGS="${SERVER_BUILD_ARGS:-}"

if ! command -v docker >/dev/null 2>&1; then
    echo "images: no docker CLI on PATH: install Docker (https://docs.docker.com/engine/install/) to build ${REGISTRY}/fluxserve-{server,operator}:${TAG}" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "images: docker is installed but no Docker engine answers at ${DOCKER_HOST:-the default socket}: start the daemon (or set DOCKER_HOST)" >&2
    exit 1
fi

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
common=(--build-arg "VERSION=${TAG}" --build-arg "REVISION=${revision}" --build-arg "CREATED=${created}")

build() {  # build NAME DOCKERFILE [EXTRA...]
    local name="$1" dockerfile="$2"
    shift 2
    local ref="${REGISTRY}/fluxserve-${name}:${TAG}"
    echo "images: building ${ref}"
    docker build -f "${dockerfile}" "${common[@]}" "$@" -t "${ref}" .
    if [[ "${PUSH}" == "1" ]]; then
        docker push "${ref}"
    fi
}

read -r -a server_args <<< "${SERVER_BUILD_ARGS}"
build operator operator/Dockerfile
build server server/Dockerfile "${server_args[@]}"
echo "images: ${REGISTRY}/fluxserve-operator:${TAG} ${REGISTRY}/fluxserve-server:${TAG}"
