# Wharf container images. Build targets:
#   runtime   CPython + wharf, non-root, `wharf` as entrypoint; build your app image FROM it
#   injector  only the installed wharf package under /wharf, for `spec.runtime: Injected`
#   operator  the wharf-operator binary on a minimal non-root base
#   artifacts-export  only the compiled wheel(s) and operator binary, for --output type=local
#
#   docker build --target runtime  -t wharf:dev .
#   docker build --target operator -t wharf-operator:dev .
#   docker build --target injector -t wharf-injector:dev .
#
# By default everything is compiled from this source tree (ARTIFACTS=source). With
# ARTIFACTS=prebuilt the wheel(s) and the operator binary are taken from PREBUILT_DIR in the build
# context instead (what the test suite does: it compiles on the host and never inside Docker).
# No `# syntax=` line on purpose: the BuildKit frontend built into Docker >= 20.10 is enough, and a
# syntax image could not be pulled on machines without registry access.

ARG BASE_IMAGE=python:3.12-slim-bookworm
ARG OPERATOR_BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG INJECTOR_BASE_IMAGE=busybox:1.37
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG ARTIFACTS=source

# ---------------------------------------------------------------------------------------------
# Artifacts compiled from source, on the same Debian release as the runtime image (the wheel is
# abi3, for every CPython >= 3.9, but its glibc requirement is that of the build).
FROM ${RUST_IMAGE} AS rust-toolchain

FROM ${BASE_IMAGE} AS artifacts-source
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY --from=rust-toolchain /usr/local/cargo /usr/local/cargo
COPY --from=rust-toolchain /usr/local/rustup /usr/local/rustup
ENV CARGO_HOME=/usr/local/cargo \
    RUSTUP_HOME=/usr/local/rustup \
    PATH=/usr/local/cargo/bin:$PATH
RUN python -m pip install --no-cache-dir "maturin==1.16.0"
WORKDIR /src
# Dependencies first: this layer only changes with the manifests and the lock file.
COPY Cargo.toml Cargo.lock ./
COPY crates/wharf-server/Cargo.toml crates/wharf-server/
COPY crates/wharf-operator/Cargo.toml crates/wharf-operator/
RUN mkdir -p crates/wharf-server/src crates/wharf-operator/src \
 && touch crates/wharf-server/src/lib.rs crates/wharf-operator/src/lib.rs crates/wharf-operator/src/main.rs \
 && cargo fetch --locked
COPY . .
RUN --mount=type=cache,target=/src/target,sharing=locked \
    maturin build --release --locked --out /artifacts \
 && cargo build --release --locked -p wharf-operator \
 && cp target/release/wharf-operator /artifacts/wharf-operator

# Artifacts built elsewhere: PREBUILT_DIR must hold the wharf_wsgi-*.whl for the image's
# architecture (abi3: one serves every CPython >= 3.9) and the wharf-operator binary.
FROM scratch AS artifacts-prebuilt
ARG PREBUILT_DIR=dist
COPY ${PREBUILT_DIR}/ /artifacts/

# A stage chosen by build argument, not an image: there is no tag to pin.
# hadolint ignore=DL3006
FROM artifacts-${ARTIFACTS} AS artifacts

# Only the artifacts, for `--target artifacts-export --output type=local,dest=DIR`: CI compiles
# once and feeds the result to later builds as ARTIFACTS=prebuilt.
FROM scratch AS artifacts-export
COPY --from=artifacts /artifacts/ /

# ---------------------------------------------------------------------------------------------
# The injected payload: the wheel unpacked into one directory. Its extension module is built for
# CPython's stable ABI (_wharf.abi3.so), so one payload serves every CPython >= 3.9.
FROM ${BASE_IMAGE} AS injector-payload
RUN --mount=type=bind,from=artifacts,source=/artifacts,target=/artifacts \
    set -e; mkdir /wharf; \
    for wheel in /artifacts/wharf_wsgi-*.whl; do python -m zipfile -e "$wheel" /wharf; done; \
    test -f /wharf/wharf/__main__.py

FROM ${INJECTOR_BASE_IMAGE} AS injector
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wharf-injector" \
      org.opencontainers.image.description="The wharf WSGI server as a payload under /wharf, copied into application pods by wharf-operator" \
      org.opencontainers.image.source="https://github.com/wharf-dev/wharf" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=injector-payload /wharf /wharf
USER 65532:65532
# -R, not -a: the target is an emptyDir owned by root, and preserving times or modes on it fails
# for a non-root user (GNU cp then exits 1; busybox only warns).
CMD ["cp", "-R", "/wharf/.", "/opt/wharf/"]

# ---------------------------------------------------------------------------------------------
FROM ${OPERATOR_BASE_IMAGE} AS operator
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wharf-operator" \
      org.opencontainers.image.description="Kubernetes operator for WsgiApp resources served by wharf" \
      org.opencontainers.image.source="https://github.com/wharf-dev/wharf" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
COPY --from=artifacts /artifacts/wharf-operator /usr/local/bin/wharf-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/wharf-operator"]

# ---------------------------------------------------------------------------------------------
# Last stage, so a plain `docker build .` produces it.
FROM ${BASE_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="wharf" \
      org.opencontainers.image.description="CPython with the wharf WSGI server; build your application image FROM this" \
      org.opencontainers.image.source="https://github.com/wharf-dev/wharf" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
# A virtualenv keeps wharf and the application's requirements apart from the distribution's
# Python (PEP 668) and puts `wharf` and `pip` first on PATH for images built on top.
# --no-index: wharf has no runtime dependencies, and a same-named package on an index must never
# be picked instead of the wheel built here.
RUN --mount=type=bind,from=artifacts,source=/artifacts,target=/artifacts \
    python -m venv /opt/wharf \
 && /opt/wharf/bin/pip install --no-cache-dir --no-index --find-links /artifacts wharf-wsgi \
 && useradd --system --uid 10001 --user-group --home-dir /app --no-create-home --shell /usr/sbin/nologin wharf \
 && mkdir /app
ENV PATH=/opt/wharf/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    WHARF_BIND=0.0.0.0:8000 \
    WHARF_ADMIN_BIND=0.0.0.0:9000
WORKDIR /app
USER 10001:10001
EXPOSE 8000 9000
ENTRYPOINT ["wharf"]
