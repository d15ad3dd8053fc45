# syntax=docker/dockerfile:1
# One image for `pouw node` (the default command) and `pouw-operator`.
#
#   docker build -t pouw:dev .                                # CPU torch
#   docker build -t pouw:dev-cuda --build-arg TORCH_VARIANT=cu124 .
#
# TORCH_VARIANT names a PyTorch wheel index (cpu, cu124, cu126, ...); the variant must publish
# torch==${TORCH_VERSION}. The builder stage installs everything into /opt/venv; the final
# stage copies that venv onto a clean slim Python and nothing else (no compilers, no pip cache).

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, in its own layer: the largest download, and it changes least often.
RUN pip install --upgrade pip \
    && pip install "torch==${TORCH_VERSION}" \
        --index-url "https://download.pytorch.org/whl/${TORCH_VARIANT}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY node ./node
COPY operator ./operator
# Every dependency has a wheel for CPython 3.11 on linux; --prefer-binary keeps it that way.
# pip compiles the installed modules, so nothing needs to write bytecode at run time.
RUN pip install --prefer-binary . \
    && pip check \
    && pouw --help > /dev/null \
    && pouw-operator --help > /dev/null

FROM ${PYTHON_IMAGE}
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="pouw" \
      org.opencontainers.image.description="PoUW node and operator: a blockchain whose mining is ML training" \
      org.opencontainers.image.licenses="MIT" \
      network.pouw.torch-variant="${TORCH_VARIANT}"
RUN groupadd --system --gid 10001 pouw \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin pouw \
    && mkdir -p /app /data \
    && chown pouw:pouw /app /data
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/app \
    POUW_DATA_DIR=/data \
    POUW_HOST=0.0.0.0 \
    POUW_PORT=8000 \
    POUW_API_PORT=8080
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000 8080
USER 10001:10001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
CMD ["pouw", "node"]
