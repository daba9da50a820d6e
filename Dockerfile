# syntax=docker/dockerfile:1
# whalecast image: the daemon (`whalecast run`, the default command) and the trainer
# (`whalecast train`). Configuration and secrets are mounted at run time, never baked in:
#   /etc/whalecast/config.yml  (WHALECAST_CONFIG)    /run/secrets/<name>  (WHALECAST_SECRETS_DIR)
# Build:   docker build -t whalecast .
# GPU:     docker build --build-arg VARIANT=gpu -t whalecast:gpu .
# Serve:   docker build --build-arg VARIANT=serve -t whalecast:serve .
#          the daemon only, without TensorFlow (requirements/serve.txt): runs
#          `whalecast run` with inference.backend: onnx; cannot train.
# redis-server is not in the image: deployments connect to a real Redis (redis.url).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# The builder's base, by default the same image. It must hold the same Python at the same
# path as PYTHON_IMAGE (the virtualenv is copied across): scripts/image.sh passes a
# derivative that also trusts the host's extra certificate authorities, for networks that
# re-sign HTTPS, so that trust never reaches the runtime stage.
ARG BUILD_IMAGE=${PYTHON_IMAGE}

FROM ${BUILD_IMAGE} AS builder
# cpu: requirements/run.txt (serves and trains, tensorflow-cpu); gpu: the same plus
# tensorflow[and-cuda]; serve: requirements/serve.txt (no TensorFlow, onnx backend only)
ARG VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# python3, not python: Debian's own python3 packages (a debootstrap base) have no `python`.
RUN python3 -m venv /opt/whalecast
ENV PATH=/opt/whalecast/bin:$PATH
WORKDIR /src
# The dependencies first, exactly as locked (versions and hashes), in a layer of their own
# that source changes do not invalidate. The locked packages install from wheels on x86-64
# Linux (the image test builds it), so the builder has no compiler; a platform that must
# build one from source needs build-essential installed here first.
COPY requirements/run.txt requirements/serve.txt requirements/
RUN lock=run; if [ "$VARIANT" = serve ]; then lock=serve; fi; \
    pip install --require-hashes -r "requirements/$lock.txt"
COPY . .
# The project on top without resolving anything again. The GPU variant adds
# tensorflow[and-cuda] at the locked TensorFlow version (its CUDA wheels are not in the
# lock); it ships the same `tensorflow` package files as tensorflow-cpu, so reinstalling
# the GPU build last makes its files the ones on disk.
# hadolint ignore=DL3013
RUN set -eu; \
    case "$VARIANT" in cpu|gpu|serve) ;; \
        *) echo "VARIANT must be cpu, gpu or serve, not '$VARIANT'" >&2; exit 1 ;; \
    esac; \
    pip install --no-deps .; \
    if [ "$VARIANT" = gpu ]; then \
        tf_version="$(python -c 'import importlib.metadata as m; print(m.version("tensorflow-cpu"))')"; \
        pip install "tensorflow[and-cuda]==${tf_version}"; \
        pip install --force-reinstall --no-deps "tensorflow==${tf_version}"; \
    fi; \
    pip check; \
    whalecast --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="whalecast" \
      org.opencontainers.image.description="Streaming LSTM inference for crypto markets" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/whalecast/whalecast"
RUN groupadd --system --gid 10001 whalecast \
    && useradd --system --uid 10001 --gid whalecast --home-dir /nonexistent \
       --no-create-home --shell /usr/sbin/nologin whalecast \
    && install -d -o whalecast -g whalecast -m 0750 /var/lib/whalecast \
       /var/lib/whalecast/models /var/lib/whalecast/history \
    && install -d -m 0755 /etc/whalecast
COPY --from=builder /opt/whalecast /opt/whalecast
# HOME, Keras' and matplotlib's caches point at /tmp so a read-only root filesystem works
# (Kubernetes mounts an emptyDir there). The metrics server listens on all interfaces
# inside the container (this variable overrides metrics.host of the config file);
# publish the port only where Prometheus needs it. Set the model registry
# (inference.registry) to /var/lib/whalecast/models and the trainer's history cache
# (training.cache_dir) to /var/lib/whalecast/history: the volumes the deployments mount.
ENV PATH=/opt/whalecast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    KERAS_HOME=/tmp/.keras \
    MPLCONFIGDIR=/tmp/matplotlib \
    TF_CPP_MIN_LOG_LEVEL=2 \
    WHALECAST_CONFIG=/etc/whalecast/config.yml \
    WHALECAST_METRICS__HOST=0.0.0.0
USER 10001:10001
WORKDIR /var/lib/whalecast
EXPOSE 9108
# /healthz answers 200 while the process is alive; urlopen raises (exit 1) on anything else.
# The port is 9108 unless WHALECAST_METRICS__PORT says otherwise (set it there, not in
# the config file, when you move the port, so this check follows).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('WHALECAST_METRICS__PORT', '9108'), timeout=4)"]
ENTRYPOINT ["whalecast"]
CMD ["run"]
