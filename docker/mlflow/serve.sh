#!/bin/sh
# Start the MLflow server. The database, artifact store and S3 endpoint come from the environment
# (MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_S3_ENDPOINT_URL), so no password
# appears in the process list. MLFLOW_AUTH=true adds the basic-auth app.
set -eu

# Inside the container the server listens on every interface so that the worker can reach it; compose
# publishes the port on BIND_ADDRESS (127.0.0.1 by default) only. The Host headers it accepts are the
# browser's, the worker's (`mlflow`) and PUBLIC_HOST's, which guards against DNS rebinding.
set -- --host 0.0.0.0 --port 5000 --allowed-hosts "$MLFLOW_ALLOWED_HOSTS"

case "${MLFLOW_AUTH:-false}" in
    true)
        if [ -z "${MLFLOW_AUTH_ADMIN_PASSWORD:-}" ] || [ -z "${MLFLOW_FLASK_SERVER_SECRET_KEY:-}" ]; then
            echo "MLFLOW_AUTH=true needs MLFLOW_AUTH_ADMIN_PASSWORD and MLFLOW_FLASK_SERVER_SECRET_KEY in docker/.env" >&2
            exit 1
        fi
        set -- "$@" --app-name basic-auth ;;
    false) ;;
    *)
        echo "MLFLOW_AUTH must be true or false, not '${MLFLOW_AUTH}'" >&2
        exit 1 ;;
esac

exec mlflow server "$@"
