#!/usr/bin/env bash
# Build (once) a local Debian base image with CPython, for machines that cannot pull images.
#
# The Dockerfile defaults to the official python image; the project's test machines have a Docker
# engine but no registry, so the container tests pass this image as BASE_IMAGE instead. It is made
# with `debootstrap --variant=minbase` from the Debian mirror and `docker import`, and carries the
# same things the Dockerfile relies on in the official image: `python`, the `venv` module with
# pip, `useradd`, CA certificates and a shell with coreutils.
#
# The image is labelled with a hash of this script and rebuilt only when the recipe changes, so a
# second run returns in well under a second. Prints the image tag on stdout.
#
# Environment:
#   WHARF_BASE_IMAGE  tag to build (default: wharf-local/debian-python:bookworm)
#   DEBIAN_SUITE      Debian suite (default: bookworm, whose python3 is 3.11)
#   DEBIAN_MIRROR     mirror URL (default: http://deb.debian.org/debian)
set -euo pipefail

tag="${WHARF_BASE_IMAGE:-wharf-local/debian-python:bookworm}"
suite="${DEBIAN_SUITE:-bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages="python3,python3-venv,python-is-python3,ca-certificates,passwd"
recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)-${suite}"
label="dev.wharf.base-image.recipe"

existing="$(docker image inspect --format "{{ index .Config.Labels \"${label}\" }}" "${tag}" 2>/dev/null || true)"
if [[ "${existing}" == "${recipe}" ]]; then
    echo "${tag}"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "base-image: installing debootstrap" >&2
    if [[ "$(id -u)" -ne 0 ]]; then
        echo "base-image: debootstrap is missing and this is not root; install it and re-run" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq debootstrap >&2 || { apt-get update -qq >&2 && apt-get install -y -qq debootstrap >&2; }
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/wharf-base-image.XXXXXX")"
trap 'rm -rf "${work}"' EXIT
rootfs="${work}/rootfs"

echo "base-image: debootstrap ${suite} from ${mirror} (a few minutes, once)" >&2
debootstrap --variant=minbase --include="${packages}" "${suite}" "${rootfs}" "${mirror}" >"${work}/debootstrap.log" 2>&1 || {
    tail -n 30 "${work}/debootstrap.log" >&2
    exit 1
}

# Trim what an image never needs; the package lists come back with `apt-get update`.
rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin "${rootfs}"/var/cache/apt/archives/*.deb \
    "${rootfs}"/var/log/* "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*

tar --numeric-owner -C "${rootfs}" -c . | docker import \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV LANG=C.UTF-8" \
    --change "LABEL ${label}=${recipe}" \
    --change 'CMD ["python3"]' \
    - "${tag}" >&2

docker run --rm "${tag}" python -c 'import sys, venv; print("base-image: python", sys.version.split()[0])' >&2
echo "${tag}"
