# The Prefect server (API, UI, scheduler), at the version requirements.lock pins, so that server and the
# worker speak the same API. Its Postgres driver, asyncpg, is a dependency of prefect and in the lock.
# The build context is the repository root.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

COPY requirements.lock /tmp/
RUN pip install -c /tmp/requirements.lock prefect==3.9.1

RUN useradd --create-home --uid 1000 prefect
USER 1000
WORKDIR /home/prefect
# PREFECT_HOME, owned by the server's user: compose mounts a volume here, which starts with this ownership
RUN mkdir /home/prefect/.prefect
CMD ["prefect", "server", "start", "--host", "0.0.0.0", "--port", "4200"]
