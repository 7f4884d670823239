#!/usr/bin/env bash
# Start etcd, kube-apiserver v1.20.2, kube-controller-manager and moto on
# 127.0.0.1 (free ports), wait until they are usable, and describe them.
#
#   tests/env/start.sh STATE_DIR
#
# Writes:
#   STATE_DIR/pids      one PID per line (for stop.sh)
#   STATE_DIR/env       KEY=VALUE lines: KUBE_SERVER KUBE_CA_FILE KUBE_ADMIN_TOKEN
#                       KUBE_LIMITED_TOKEN KUBECONFIG MOTO_URL KUBECTL HELM ETCD_URL
#   STATE_DIR/logs/NAME.log   stdout+stderr of etcd, kube-apiserver,
#                       kube-controller-manager, moto
#   STATE_DIR/pki, STATE_DIR/etcd-data, STATE_DIR/kubeconfig, STATE_DIR/tokens.csv
# On failure: prints the tail of the failing log, stops what it started, exits 1.
# Env: UD_START_TIMEOUT (seconds, default 180) bounds the wait.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

[ $# -eq 1 ] || ud_die "usage: $0 STATE_DIR"
mkdir -p "$1"
STATE="$(cd "$1" && pwd)"
TIMEOUT="${UD_START_TIMEOUT:-180}"

for b in "$ETCD_BIN" "$KUBE_APISERVER_BIN" "$KUBE_CONTROLLER_MANAGER_BIN" \
         "$KUBECTL_BIN" "$HELM_BIN" "$MOTO_SERVER_BIN"; do
  [ -x "$b" ] || ud_die "$b not found: run tests/env/setup.sh first"
done
for c in openssl curl python3; do
  command -v "$c" >/dev/null 2>&1 || ud_die "$c not found: run tests/env/setup.sh first"
done

# Refuse to clobber a running environment.
if [ -f "$STATE/pids" ]; then
  while read -r pid; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      ud_die "$STATE already has running processes (pid $pid); run tests/env/stop.sh $STATE first"
    fi
  done <"$STATE/pids"
fi
rm -rf "$STATE/pids" "$STATE/env" "$STATE/logs" "$STATE/pki" "$STATE/etcd-data" \
       "$STATE/kubeconfig" "$STATE/tokens.csv"
mkdir -p "$STATE/logs" "$STATE/pki"
: >"$STATE/pids"

# ---------------------------------------------------------- processes ------
declare -A PID_OF=()
START_FAILED=""

cleanup_on_error() {
  local rc=$?
  if [ "$rc" != 0 ]; then
    if [ -n "$START_FAILED" ] && [ -f "$STATE/logs/$START_FAILED.log" ]; then
      echo "----- last lines of $STATE/logs/$START_FAILED.log -----" >&2
      tail -n 40 "$STATE/logs/$START_FAILED.log" >&2 || true
      echo "-----" >&2
    fi
    ud_log "start failed; stopping what was started"
    "$HERE/stop.sh" "$STATE" >&2 || true
  fi
  exit "$rc"
}
trap cleanup_on_error EXIT

# spawn NAME CMD... : run in the background, output to logs/NAME.log.
spawn() {
  local name="$1"; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  local pid=$!
  PID_OF[$name]=$pid
  echo "$pid" >>"$STATE/pids"
}

fail() { # fail NAME MESSAGE
  START_FAILED="$1"
  ud_log "$2"
  exit 1
}

# wait_for NAME DESCRIPTION CMD... : poll CMD until it succeeds; fail if NAME dies.
wait_for() {
  local name="$1" what="$2"; shift 2
  while :; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
      fail "$name" "$name exited while waiting for: $what"
    fi
    if [ "$SECONDS" -ge "$DEADLINE" ]; then
      fail "$name" "timed out after ${TIMEOUT}s waiting for: $what"
    fi
    sleep 0.5
  done
}

# Free ports: bind all at once to port 0 so they are distinct.
read -r P_ETCD_CLIENT P_ETCD_PEER P_APISERVER P_MOTO < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(4)]
for s in ss:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss:
    s.close()
')

# ---------------------------------------------------------------- pki ------
PKI="$STATE/pki"
(
  cd "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -keyout ca.key -out ca.crt -subj "/CN=upstream-discovery-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -sha256 \
    -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  cat >apiserver.ext <<'EOF'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost
EOF
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
    -days 3650 -sha256 -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  # Service-account token signing key pair.
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  chmod 600 ./*.key
)

ADMIN_TOKEN="$(openssl rand -hex 24)"
LIMITED_TOKEN="$(openssl rand -hex 24)"
# token,user,uid[,"group1,group2"]
cat >"$STATE/tokens.csv" <<EOF
$ADMIN_TOKEN,admin,uid-admin,"system:masters"
$LIMITED_TOKEN,limited,uid-limited
EOF
chmod 600 "$STATE/tokens.csv"

KUBE_SERVER="https://127.0.0.1:$P_APISERVER"
KUBECONFIG_FILE="$STATE/kubeconfig"
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: upstream-discovery-test
  cluster:
    server: $KUBE_SERVER
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $ADMIN_TOKEN
contexts:
- name: admin@upstream-discovery-test
  context:
    cluster: upstream-discovery-test
    user: admin
    namespace: default
current-context: admin@upstream-discovery-test
EOF
chmod 600 "$KUBECONFIG_FILE"

ETCD_URL="http://127.0.0.1:$P_ETCD_CLIENT"
MOTO_URL="http://127.0.0.1:$P_MOTO"
DEADLINE=$((SECONDS + TIMEOUT))

# --------------------------------------------------------------- etcd ------
spawn etcd "$ETCD_BIN" \
  --name ud-test \
  --data-dir "$STATE/etcd-data" \
  --listen-client-urls "$ETCD_URL" \
  --advertise-client-urls "$ETCD_URL" \
  --listen-peer-urls "http://127.0.0.1:$P_ETCD_PEER" \
  --initial-advertise-peer-urls "http://127.0.0.1:$P_ETCD_PEER" \
  --initial-cluster "ud-test=http://127.0.0.1:$P_ETCD_PEER" \
  --initial-cluster-state new \
  --logger zap \
  --log-level warn

# moto does not depend on anything: start it now so it warms up in parallel.
spawn moto "$MOTO_SERVER_BIN" -H 127.0.0.1 -p "$P_MOTO"

wait_for etcd "etcd $ETCD_URL/health" \
  sh -c "curl -fsS --max-time 2 '$ETCD_URL/health' | grep -q '\"health\":\"true\"'"

# ------------------------------------------------------ kube-apiserver -----
spawn kube-apiserver "$KUBE_APISERVER_BIN" \
  --etcd-servers "$ETCD_URL" \
  --bind-address 127.0.0.1 \
  --advertise-address 127.0.0.1 \
  --secure-port "$P_APISERVER" \
  --insecure-port 0 \
  --tls-cert-file "$PKI/apiserver.crt" \
  --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" \
  --token-auth-file "$STATE/tokens.csv" \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins ValidatingAdmissionWebhook \
  --anonymous-auth=false \
  --service-account-key-file "$PKI/sa.pub" \
  --service-account-signing-key-file "$PKI/sa.key" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --api-audiences https://kubernetes.default.svc.cluster.local \
  --service-cluster-ip-range 10.96.0.0/16 \
  --allow-privileged=true \
  --profiling=false \
  --cert-dir "$PKI" \
  --v 1

apiserver_ready() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" \
    -H "Authorization: Bearer $ADMIN_TOKEN" "$KUBE_SERVER/readyz" | grep -qx ok
}
wait_for kube-apiserver "$KUBE_SERVER/readyz" apiserver_ready

# --------------------------------------------- kube-controller-manager -----
spawn kube-controller-manager "$KUBE_CONTROLLER_MANAGER_BIN" \
  --kubeconfig "$KUBECONFIG_FILE" \
  --leader-elect=false \
  --port 0 \
  --secure-port 0 \
  --service-account-private-key-file "$PKI/sa.key" \
  --root-ca-file "$PKI/ca.crt" \
  --use-service-account-credentials=false \
  --cluster-signing-cert-file "$PKI/ca.crt" \
  --cluster-signing-key-file "$PKI/ca.key" \
  --controllers '*' \
  --profiling=false \
  --v 1

default_sa_exists() {
  curl -fsS --max-time 3 --cacert "$PKI/ca.crt" -o /dev/null \
    -H "Authorization: Bearer $ADMIN_TOKEN" \
    "$KUBE_SERVER/api/v1/namespaces/default/serviceaccounts/default"
}
wait_for kube-controller-manager "ServiceAccount default/default" default_sa_exists

# --------------------------------------------------------------- moto ------
moto_answers() {
  # Any HTTP answer will do (curl exits 0 on any status without -f).
  curl -sS --max-time 3 -o /dev/null "$MOTO_URL/moto-api/"
}
wait_for moto "$MOTO_URL" moto_answers

# Everything is still alive?
for name in "${!PID_OF[@]}"; do
  kill -0 "${PID_OF[$name]}" 2>/dev/null || fail "$name" "$name exited"
done

cat >"$STATE/env.tmp" <<EOF
KUBE_SERVER=$KUBE_SERVER
KUBE_CA_FILE=$PKI/ca.crt
KUBE_ADMIN_TOKEN=$ADMIN_TOKEN
KUBE_LIMITED_TOKEN=$LIMITED_TOKEN
KUBECONFIG=$KUBECONFIG_FILE
MOTO_URL=$MOTO_URL
KUBECTL=$KUBECTL_BIN
HELM=$HELM_BIN
ETCD_URL=$ETCD_URL
EOF
mv -f "$STATE/env.tmp" "$STATE/env"

ud_log "environment up in ${SECONDS}s: $STATE/env"
grep -v TOKEN "$STATE/env"
