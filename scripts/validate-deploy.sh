#!/usr/bin/env bash
# Validates the deployment files against the real schemas, beyond what `make test` checks by
# reading them: Kubernetes manifests with kubernetes-validate (strict, bundled OpenAPI
# schemas, no cluster needed; installed into a cache venv from PyPI on first use), the
# kustomization with `kubectl kustomize` and the Compose file with `docker compose config`
# or `docker-compose config`, where those clients are installed. No Docker engine or cluster
# is needed. KEDA's ScaledObject is a CRD whose schema is not bundled: the test suite checks
# its consumer names instead.
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION=${K8S_VERSION:-1.30.0}
venv="${XDG_CACHE_HOME:-$HOME/.cache}/swarmdirector/deploy-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "[deploy] installing kubernetes-validate into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet kubernetes-validate
fi

core=(namespace config resources migrate-job workers api disruption autoscaling prometheus-adapter)
files=()
for name in "${core[@]}"; do files+=("deploy/k8s/$name.yaml"); done
"$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${files[@]}"
echo "[deploy] Kubernetes manifests valid against $K8S_VERSION (strict)"

if command -v kubectl >/dev/null 2>&1; then
  documents=$(kubectl kustomize deploy/k8s | grep -c '^kind:')
  echo "[deploy] kubectl kustomize: $documents resources"
else
  echo "[deploy] no kubectl: kustomization not rendered"
fi

if docker compose version >/dev/null 2>&1; then
  docker compose config -q && echo "[deploy] docker compose config: valid"
elif command -v docker-compose >/dev/null 2>&1; then
  docker-compose config -q && echo "[deploy] docker-compose config: valid"
else
  echo "[deploy] no Compose client: docker-compose.yml checked by the test suite only"
fi
