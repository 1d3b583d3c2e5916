# syntax=docker/dockerfile:1
# Outrider: slim, non-root image; `outrider serve` is the entry point.
#
#   docker build -t outrider:cpu .                          # CPU (default)
#   docker build --build-arg VARIANT=cuda -t outrider:cuda .  # CUDA
#   docker run --rm -e OUTRIDER_KAFKA_BOOTSTRAP=kafka:9092 -p 9464:9464 \
#       -v outrider-state:/var/lib/outrider outrider:cpu
#
# VARIANT picks the torch wheel, nothing else differs:
#   cpu   torch from PyTorch's CPU-only wheel index (https://download.pytorch.org/whl/cpu),
#         about 5x smaller than the default wheel. (The project's own CI cannot reach that
#         index and installs torch from PyPI; for users building the image it is fine.)
#   cuda  torch from PyPI, whose Linux x86_64 wheels bundle the CUDA runtime (nvidia-* wheels),
#         so the slim Python base suffices; the host needs the NVIDIA driver and the NVIDIA
#         container toolkit (`docker run --gpus all ...`). The scorer uses CUDA when present.
#
# Volumes: /var/lib/outrider is the state dir (checkpoint store, OUTRIDER_STATE_DIR);
# /etc/outrider holds operator config (e.g. OUTRIDER_SOURCES_CONFIG=/etc/outrider/sources.toml).
# The image build is checked where a Docker engine exists; the project's tests lint this file
# (hadolint) and run the entry point and the health check directly.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build

ARG VARIANT=cpu
ARG TORCH_VERSION=2.5.1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN python -m venv /opt/outrider
ENV PATH=/opt/outrider/bin:$PATH

# torch first, in its own layer: the biggest download, reused across source changes.
RUN case "${VARIANT}" in \
      cpu) pip install "torch==${TORCH_VERSION}" \
             --index-url https://download.pytorch.org/whl/cpu ;; \
      cuda) pip install "torch==${TORCH_VERSION}" ;; \
      *) echo "VARIANT must be cpu or cuda, not ${VARIANT}" >&2; exit 1 ;; \
    esac

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY detectors ./detectors
COPY service ./service
# The project itself, not editable; torch is already satisfied, so pip keeps that wheel.
RUN pip install --no-compile . \
    && find /opt/outrider -name '__pycache__' -prune -exec rm -rf {} + \
    && outrider serve --help >/dev/null

# ---------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG VARIANT=cpu
LABEL org.opencontainers.image.title="outrider" \
      org.opencontainers.image.description="Streaming anomaly detection for security events on Kafka" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.outrider.variant="${VARIANT}"

# A fixed, unprivileged uid/gid (Kubernetes runAsNonRoot checks the numeric USER).
RUN groupadd --system --gid 10001 outrider \
    && useradd --system --uid 10001 --gid outrider --home-dir /var/lib/outrider \
       --no-create-home --shell /usr/sbin/nologin outrider \
    && mkdir -p /var/lib/outrider /etc/outrider \
    && chown outrider:outrider /var/lib/outrider

COPY --from=build /opt/outrider /opt/outrider

# Metrics listen on all interfaces inside the container (the default is loopback only).
ENV PATH=/opt/outrider/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/outrider \
    OUTRIDER_STATE_DIR=/var/lib/outrider \
    OUTRIDER_METRICS_HOST=0.0.0.0 \
    OUTRIDER_METRICS_PORT=9464

VOLUME ["/var/lib/outrider", "/etc/outrider"]
WORKDIR /var/lib/outrider
USER 10001:10001
EXPOSE 9464

# Healthy = the process answers on its metrics endpoint (python: no curl in a slim image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-m", "service.health"]

ENTRYPOINT ["outrider"]
CMD ["serve"]
