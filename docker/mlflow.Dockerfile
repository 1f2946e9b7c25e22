# The MLflow tracking server, at the version requirements.lock pins, so that server and clients speak the
# same API. The build context is the repository root.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

COPY requirements.lock docker/requirements-mlflow.txt /tmp/
# The lock as constraints keeps every dependency shared with the project at the project's version; the
# Postgres, S3 and basic-auth drivers have their own pins.
RUN pip install -c /tmp/requirements.lock mlflow==3.17.2 -r /tmp/requirements-mlflow.txt

COPY docker/mlflow/serve.sh /usr/local/bin/mlflow-serve
RUN useradd --create-home --uid 1000 mlflow
USER 1000
WORKDIR /home/mlflow
CMD ["mlflow-serve"]
