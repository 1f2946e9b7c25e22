# The project image, which the GPU worker runs flows in. The build context is the repository root:
#   docker compose -f docker/compose.yaml build worker
# The install order is the Makefile's: torch by its exact version first, then the locked versions of
# everything else, then nichetune itself with --no-deps (the lock already holds its dependencies).
FROM python:3.11-slim

# git: Prefect's git_clone pull step and DVC work in a clone of the project.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/nichetune
COPY requirements.lock docker/requirements-worker.txt ./

# The CUDA build of the torch version the lock pins. PyTorch's index serves each release once per CUDA
# version (cu126, cu128, cu130, ..., and cpu); pick one that the host's NVIDIA driver supports, e.g.
# `--build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128`. The wheels bring their own CUDA
# libraries, so the base image needs none. The version installed is 2.13.0+cu130, and `==2.13.0` matches
# it (PEP 440 ignores the +cu130 label), so the next step sees the lock's torch==2.13.0 as installed and
# keeps this build instead of replacing it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install torch==2.13.0 --index-url "$TORCH_INDEX_URL"
RUN pip install -r requirements.lock
# The lock as constraints, so that the S3 plugin cannot move any locked version.
RUN pip install -c requirements.lock -r requirements-worker.txt

COPY pyproject.toml README.md ./
COPY flows flows
COPY tasks tasks
COPY benchmarks benchmarks
RUN pip install --no-deps .

# Flows run as an unprivileged user; its home holds Prefect's settings and the clones of the project.
RUN useradd --create-home --uid 1000 nichetune
USER 1000
WORKDIR /home/nichetune
