#!/usr/bin/env bash
# End-to-end suite on kind: install the operator with Helm and run the hello example through it.
#
#   tests/e2e/run.sh            # needs docker and kind; helm/kubectl from PATH or scripts/k8s-tools.sh
#   E2E_SUITE=faults tests/e2e/run.sh
#
# Suites:
#   main     Bundled and Injected apps, rolling update under load, autoscaling, garbage collection,
#            the Django example (migration Job before the pods, Ingress, PodMonitor status)
#   faults   two operator replicas: the leader is killed under load (exactly one acts afterwards),
#            a deleted child comes back, a broken app shows Degraded with the API server's message
#
# Skips (exit 0, reason printed) when docker or kind is missing, so it is safe in any test run.
# Environment:
#   E2E_CLUSTER        kind cluster name (default wharf-e2e); an existing cluster is reused
#   E2E_NODE_IMAGE     kind node image, e.g. kindest/node:v1.32.2 (default: kind's own)
#   E2E_PREBUILT_DIR   directory (inside the repo) with wharf_wsgi-*.whl and wharf-operator, to skip
#                      compiling inside Docker (ARTIFACTS=prebuilt)
#   E2E_BASE_IMAGE     BASE_IMAGE for the images (default: the Dockerfile's)
#   E2E_ARTIFACTS      where logs go on failure (default .cache/e2e-artifacts)
#   E2E_KEEP_CLUSTER   1 to keep the cluster afterwards
#   E2E_SUITE          main (default) or faults
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "${repo_root}"

skip() {
    echo "SKIP e2e: $*"
    exit 0
}

command -v docker >/dev/null 2>&1 || skip "docker is not installed"
docker info >/dev/null 2>&1 || skip "no Docker engine answers"
command -v kind >/dev/null 2>&1 || skip "kind is not installed (https://kind.sigs.k8s.io)"

if ! command -v helm >/dev/null 2>&1 || ! command -v kubectl >/dev/null 2>&1; then
    PATH="$("${repo_root}/scripts/k8s-tools.sh"):${PATH}"
fi

suite="${E2E_SUITE:-main}"
case "${suite}" in
    main | faults) ;;
    *) echo "e2e: unknown E2E_SUITE ${suite} (main or faults)" >&2; exit 2 ;;
esac
cluster="${E2E_CLUSTER:-wharf-e2e}"
artifacts="${E2E_ARTIFACTS:-${repo_root}/.cache/e2e-artifacts}"
ns="wharf-e2e"
operator_ns="wharf-system"
tag="e2e"
kubectl_ctx=(--context "kind-${cluster}")

log() { printf '\n=== %s\n' "$*"; }
k() { kubectl "${kubectl_ctx[@]}" "$@"; }

collect_logs() {
    mkdir -p "${artifacts}"
    kind export logs "${artifacts}/kind" --name "${cluster}" >/dev/null 2>&1 || true
    k -n "${operator_ns}" logs -l app.kubernetes.io/name=wharf-operator --all-containers --prefix --tail=-1 >"${artifacts}/operator.log" 2>&1 || true
    k -n "${operator_ns}" get lease -o yaml >"${artifacts}/leases.yaml" 2>&1 || true
    k get wsgiapps,deployments,replicasets,pods,services,hpa,pdb,jobs,ingresses -A -o wide >"${artifacts}/objects.txt" 2>&1 || true
    k get wsgiapps -A -o yaml >"${artifacts}/wsgiapps.yaml" 2>&1 || true
    k get events -A --sort-by=.lastTimestamp >"${artifacts}/events.txt" 2>&1 || true
    echo "e2e: logs exported to ${artifacts}"
}

finish() {
    local status=$?
    if [[ "${status}" -ne 0 ]]; then
        echo "e2e: FAILED (exit ${status})"
        collect_logs
    fi
    if [[ "${E2E_KEEP_CLUSTER:-0}" != "1" ]]; then
        kind delete cluster --name "${cluster}" >/dev/null 2>&1 || true
    fi
    exit "${status}"
}
trap finish EXIT

build() {
    local target="$1" image="$2"
    local args=(--target "${target}" --tag "${image}" --build-arg "REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)")
    if [[ -n "${E2E_PREBUILT_DIR:-}" ]]; then
        args+=(--build-arg ARTIFACTS=prebuilt --build-arg "PREBUILT_DIR=${E2E_PREBUILT_DIR}")
    fi
    if [[ -n "${E2E_BASE_IMAGE:-}" ]]; then
        args+=(--build-arg "BASE_IMAGE=${E2E_BASE_IMAGE}")
    fi
    DOCKER_BUILDKIT=1 docker build "${args[@]}" .
}

# GET a URL from inside the cluster (through the Service), using the hello image's Python.
in_cluster_get() {
    local url="$1"
    k -n "${ns}" run "get-$(date +%s%N | tail -c 8)" --rm -i --quiet --restart=Never \
        --image="wharf-e2e/hello:v1" --image-pull-policy=Never --command -- \
        python -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode(), end="")' "${url}"
}

wait_ready() {
    k -n "${ns}" wait "wsgiapp/$1" --for=condition=Ready --timeout=240s
}

expect_body() {
    local url="$1" expected="$2" body
    body="$(in_cluster_get "${url}")"
    if [[ "${body}" != "${expected}" ]]; then
        echo "e2e: GET ${url} returned '${body}', expected '${expected}'" >&2
        return 1
    fi
    echo "e2e: GET ${url} -> ${body}"
}

log "cluster ${cluster}"
if ! kind get clusters 2>/dev/null | grep -qx "${cluster}"; then
    kind create cluster --name "${cluster}" ${E2E_NODE_IMAGE:+--image "${E2E_NODE_IMAGE}"} --wait 120s
fi
k version

log "images"
build runtime "wharf-e2e/wharf:${tag}"
build injector "wharf-e2e/wharf-injector:${tag}"
build operator "wharf-e2e/wharf-operator:${tag}"
for version in v1 v2; do
    DOCKER_BUILDKIT=1 docker build --build-arg "WHARF_IMAGE=wharf-e2e/wharf:${tag}" \
        --build-arg "HELLO_VERSION=${version}" --tag "wharf-e2e/hello:${version}" deploy/examples/hello
done
DOCKER_BUILDKIT=1 docker build --build-arg "WHARF_IMAGE=wharf-e2e/wharf:${tag}" \
    --tag wharf-e2e/django:v1 deploy/examples/django
# The plain image must use the same CPython minor as the injector payload (BASE_IMAGE's).
python_image="${E2E_BASE_IMAGE:-$(sed -n 's/^ARG BASE_IMAGE=//p' Dockerfile)}"
DOCKER_BUILDKIT=1 docker build --file deploy/examples/hello/Dockerfile.plain --build-arg "PYTHON_IMAGE=${python_image}" \
    --build-arg HELLO_VERSION=plain --tag "wharf-e2e/hello-plain:v1" deploy/examples/hello
# `kind load docker-image` fails with Docker's containerd image store (newer Docker's default); an
# archive from `docker save` loads with either store.
archive="$(mktemp -d)/images.tar"
docker save -o "${archive}" "wharf-e2e/wharf-operator:${tag}" "wharf-e2e/wharf-injector:${tag}" \
    wharf-e2e/hello:v1 wharf-e2e/hello:v2 wharf-e2e/hello-plain:v1 wharf-e2e/django:v1
kind load image-archive "${archive}" --name "${cluster}"
rm -f "${archive}"

log "helm install"
replicas=1
[[ "${suite}" == faults ]] && replicas=2
helm --kube-context "kind-${cluster}" upgrade --install wharf-operator charts/wharf-operator \
    --namespace "${operator_ns}" --create-namespace --set "replicaCount=${replicas}" \
    --set image.repository=wharf-e2e/wharf-operator --set "image.tag=${tag}" --set image.pullPolicy=Never \
    --set injector.image.repository=wharf-e2e/wharf-injector --set "injector.image.tag=${tag}" \
    --set log.format=text --wait --timeout 180s
k -n "${operator_ns}" rollout status deployment/wharf-operator --timeout=120s
k create namespace "${ns}" --dry-run=client -o yaml | k apply -f -

main_suite() {
    log "bundled runtime"
    sed -e "s|image: .*|image: wharf-e2e/hello:v1\n  imagePullPolicy: Never|" deploy/examples/hello/wsgiapp-bundled.yaml | k -n "${ns}" apply -f -
    wait_ready hello
    expect_body "http://hello.${ns}.svc/" "Hello from wharf! version=v1"

    log "injected runtime"
    sed -e "s|image: .*|image: wharf-e2e/hello-plain:v1\n  imagePullPolicy: Never|" deploy/examples/hello/wsgiapp-injected.yaml | k -n "${ns}" apply -f -
    wait_ready hello-injected
    expect_body "http://hello-injected.${ns}.svc/" "Hello from wharf! version=plain"
    init_images="$(k -n "${ns}" get deployment hello-injected -o jsonpath='{.spec.template.spec.initContainers[*].image}')"
    [[ "${init_images}" == *"wharf-e2e/wharf-injector:${tag}"* ]] || { echo "e2e: no injector init container (${init_images})" >&2; exit 1; }

    log "rolling update under load"
    start_load 75
    k -n "${ns}" patch wsgiapp hello --type=merge -p '{"spec":{"image":"wharf-e2e/hello:v2"}}'
    k -n "${ns}" rollout status deployment/hello --timeout=180s
    wait_ready hello
    finish_load v2
    expect_body "http://hello.${ns}.svc/" "Hello from wharf! version=v2"

    log "autoscaling"
    k -n "${ns}" patch wsgiapp hello --type=merge \
        -p '{"spec":{"replicas":null,"autoscaling":{"minReplicas":3,"maxReplicas":5,"targetCPUUtilizationPercentage":70}}}'
    k -n "${ns}" wait hpa/hello --for=jsonpath='{.spec.minReplicas}'=3 --timeout=120s
    [[ "$(k -n "${ns}" get hpa hello -o jsonpath='{.spec.maxReplicas}')" == "5" ]]
    [[ "$(k -n "${ns}" get hpa hello -o jsonpath='{.metadata.ownerReferences[0].kind}')" == "WsgiApp" ]]
    # The HPA (not the operator) raises the Deployment to minReplicas.
    k -n "${ns}" wait deployment/hello --for=jsonpath='{.spec.replicas}'=3 --timeout=180s
    k -n "${ns}" rollout status deployment/hello --timeout=180s

    django_example

    log "garbage collection"
    k -n "${ns}" delete wsgiapp hello --wait=true --timeout=120s
    for object in deployment/hello service/hello hpa/hello; do
        k -n "${ns}" wait "${object}" --for=delete --timeout=120s
    done
    if k -n "${ns}" get pdb hello >/dev/null 2>&1; then
        k -n "${ns}" wait pdb/hello --for=delete --timeout=120s
    fi
}

faults_suite() {
    log "app for the fault tests"
    sed -e "s|image: .*|image: wharf-e2e/hello:v1\n  imagePullPolicy: Never|" deploy/examples/hello/wsgiapp-bundled.yaml | k -n "${ns}" apply -f -
    wait_ready hello
    expect_body "http://hello.${ns}.svc/" "Hello from wharf! version=v1"

    log "kill the leader of two operator replicas under load"
    start_load 60
    local leader holder=""
    leader="$(lease_holder)"
    [[ -n "${leader}" ]] || { echo "e2e: no leader holds the Lease" >&2; return 1; }
    echo "e2e: killing leader ${leader}"
    k -n "${operator_ns}" delete pod "${leader}" --grace-period=0 --force --wait=false
    # The killed leader cannot release the Lease: the standby takes over after the lease duration (15 s).
    for _ in $(seq 90); do
        holder="$(lease_holder)"
        [[ -n "${holder}" && "${holder}" != "${leader}" ]] && break
        sleep 1
    done
    [[ -n "${holder}" && "${holder}" != "${leader}" ]] || { echo "e2e: nobody took over from ${leader}" >&2; return 1; }
    echo "e2e: ${holder} took over"
    k -n "${operator_ns}" rollout status deployment/wharf-operator --timeout=120s
    exactly_one_leader "${holder}"
    finish_load

    log "a deleted child comes back"
    local uid_before uid_after=""
    uid_before="$(k -n "${ns}" get service hello -o jsonpath='{.metadata.uid}')"
    k -n "${ns}" delete service hello --wait=true --timeout=60s
    for _ in $(seq 60); do
        uid_after="$(k -n "${ns}" get service hello -o jsonpath='{.metadata.uid}' 2>/dev/null || true)"
        [[ -n "${uid_after}" && "${uid_after}" != "${uid_before}" ]] && break
        sleep 1
    done
    [[ -n "${uid_after}" && "${uid_after}" != "${uid_before}" ]] || { echo "e2e: the Service was not recreated" >&2; return 1; }
    events | grep -q "^Created  *created Service hello"
    expect_body "http://hello.${ns}.svc/" "Hello from wharf! version=v1"
    exactly_one_leader "${holder}"

    log "a broken app is Degraded with a readable message"
    # requests above limits: the API server rejects the Deployment (422), the running pods stay.
    k -n "${ns}" patch wsgiapp hello --type=merge \
        -p '{"spec":{"resources":{"requests":{"cpu":"2"},"limits":{"cpu":"1"}}}}'
    k -n "${ns}" wait wsgiapp/hello --for=condition=Degraded --timeout=120s
    local reason message
    reason="$(k -n "${ns}" get wsgiapp hello -o jsonpath='{.status.conditions[?(@.type=="Degraded")].reason}')"
    message="$(k -n "${ns}" get wsgiapp hello -o jsonpath='{.status.conditions[?(@.type=="Degraded")].message}')"
    echo "e2e: Degraded ${reason}: ${message}"
    [[ "${reason}" == InvalidSpec ]]
    [[ "${message}" == "apply Deployment ${ns}/hello failed: "*"must be less than or equal to cpu limit"*"(Invalid, HTTP 422)" ]]
    [[ "${message}" != *"ErrorResponse"* && "${message}" != *"Status {"* ]]
    events | grep -q "^InvalidSpec .*HTTP 422"
    expect_body "http://hello.${ns}.svc/" "Hello from wharf! version=v1"
    # Fixed again: Degraded clears.
    k -n "${ns}" patch wsgiapp hello --type=json -p '[{"op":"remove","path":"/spec/resources"}]'
    k -n "${ns}" wait wsgiapp/hello --for=condition=Degraded=false --timeout=120s
}

# deploy/examples/django: the migration Job runs (and finishes) before the first app pod exists,
# the Ingress exists and is the app's URL, the admin answers, the PodMonitor's absence is reported.
django_example() {
    local dj=django-example
    log "django example"
    k apply -f deploy/examples/django/postgres.yaml
    k -n "${dj}" rollout status deployment/postgres --timeout=180s
    sed -e "s|image: ghcr.io/wharf-dev/django-example:.*|image: wharf-e2e/django:v1\n  imagePullPolicy: Never|" \
        deploy/examples/django/wsgiapp.yaml | k apply -f -
    k -n "${dj}" wait wsgiapp/mysite --for=condition=Ready --timeout=300s
    local job completed first_pod
    job="$(k -n "${dj}" get jobs -l wharf.dev/template-hash -o jsonpath='{.items[0].metadata.name}')"
    [[ "${job}" == mysite-migrate-* ]] || { echo "e2e: no migration Job (${job})" >&2; return 1; }
    k -n "${dj}" wait "job/${job}" --for=condition=Complete --timeout=60s
    k -n "${dj}" logs "job/${job}" | grep -q "Applying auth.0001_initial... OK"
    completed="$(k -n "${dj}" get job "${job}" -o jsonpath='{.status.completionTime}')"
    first_pod="$(k -n "${dj}" get pods -l app.kubernetes.io/instance=mysite --sort-by=.metadata.creationTimestamp \
        -o jsonpath='{.items[0].metadata.creationTimestamp}')"
    echo "e2e: migration completed ${completed}, first app pod created ${first_pod}"
    # RFC 3339 UTC timestamps of the same form compare as strings.
    [[ ! "${first_pod}" < "${completed}" ]] || { echo "e2e: an app pod started before the migration finished" >&2; return 1; }
    [[ "$(k -n "${dj}" get ingress mysite -o jsonpath='{.spec.rules[0].host}')" == mysite.example.com ]]
    [[ "$(k -n "${dj}" get wsgiapp mysite -o jsonpath='{.status.url}')" == https://mysite.example.com/ ]]
    [[ "$(k -n "${dj}" get wsgiapp mysite -o jsonpath='{.status.address}')" == "http://mysite.${dj}.svc" ]]
    [[ "$(k -n "${dj}" get wsgiapp mysite -o jsonpath='{.status.monitoring}')" == "no PodMonitor: "* ]]
    in_cluster_get "http://mysite.${dj}.svc/admin/login/" | grep -q 'csrfmiddlewaretoken'
    k delete namespace "${dj}" --wait=true --timeout=180s
}

# The app namespace's Events as "REASON NOTE" lines.
events() {
    k -n "${ns}" get events.events.k8s.io -o custom-columns=REASON:.reason,NOTE:.note --no-headers
}

# Holder of the operator's Lease (a pod name).
lease_holder() {
    k -n "${operator_ns}" get lease wharf-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true
}

# Exactly one running operator pod reports wharf_operator_leader 1, and it is the Lease holder.
exactly_one_leader() {
    local expected="$1" pod port value leaders=()
    for pod in $(k -n "${operator_ns}" get pods -l app.kubernetes.io/name=wharf-operator \
        --field-selector=status.phase=Running -o jsonpath='{.items[*].metadata.name}'); do
        port="$(k -n "${operator_ns}" get pod "${pod}" -o jsonpath='{.spec.containers[0].ports[?(@.name=="metrics")].containerPort}')"
        value="$(k get --raw "/api/v1/namespaces/${operator_ns}/pods/${pod}:${port}/proxy/metrics" | sed -n 's/^wharf_operator_leader \([0-9]*\).*/\1/p')"
        echo "e2e: ${pod} wharf_operator_leader=${value}"
        [[ "${value}" == 1 ]] && leaders+=("${pod}")
    done
    if [[ "${#leaders[@]}" -ne 1 || "${leaders[0]}" != "${expected}" ]]; then
        echo "e2e: expected exactly ${expected} to act, found: ${leaders[*]:-none}" >&2
        return 1
    fi
}

# Load against hello in the background (a pod); finish_load checks that nothing failed and, if
# given a version, that it answered some requests.
start_load() {
    local seconds="$1"
    k -n "${ns}" delete pod loadgen --ignore-not-found --wait=true
    k -n "${ns}" run loadgen --restart=Never --image=wharf-e2e/hello:v1 --image-pull-policy=Never \
        --env "URL=http://hello.${ns}.svc/" --env "DURATION=${seconds}" --command -- python -c "$(cat tests/e2e/load.py)"
    k -n "${ns}" wait pod/loadgen --for=condition=Ready --timeout=60s
    for _ in $(seq 60); do
        k -n "${ns}" logs loadgen 2>/dev/null | grep -q "load: started" && break
        sleep 1
    done
    k -n "${ns}" logs loadgen | grep -q "load: started"
}

finish_load() {
    local version="${1:-}"
    k -n "${ns}" wait pod/loadgen --for=jsonpath='{.status.phase}'=Succeeded --timeout=180s
    local summary
    summary="$(k -n "${ns}" logs loadgen | sed -n 's/^load: {/{/p')"
    echo "e2e: load summary ${summary}"
    python3 - "${summary}" "${version}" <<'PY'
import json, sys
counts, version = json.loads(sys.argv[1]), sys.argv[2]
assert counts["failed"] == 0, f"failed requests: {counts}"
assert counts["ok"] > 100, f"too few requests to mean anything: {counts}"
assert not version or counts["versions"].get(version, 0) > 0, f"never answered by {version}: {counts}"
PY
}

"${suite}_suite"
log "e2e passed"
