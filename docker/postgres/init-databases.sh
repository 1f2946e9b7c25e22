#!/bin/bash
# One Postgres, a role and a database per server, so neither server can read or change the other's tables.
# The postgres image runs this once, on the first start with an empty data volume; to rerun it, remove the
# volume (`docker compose -f docker/compose.yaml down -v` deletes all runs, models and flow history).
set -euo pipefail

# create_role_and_databases ROLE PASSWORD DATABASE...: psql variables quote the names and the password,
# so any value in .env is taken literally.
create_role_and_databases() {
    local role=$1 password=$2
    shift 2
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v role="$role" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
SQL
    for database in "$@"; do
        psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
            -v database="$database" -v role="$role" <<'SQL'
CREATE DATABASE :"database" OWNER :"role";
SQL
    done
}

create_role_and_databases prefect "$PREFECT_DB_PASSWORD" prefect
# mlflow_auth holds MLflow's users and permissions when basic auth is on (docker/mlflow/basic_auth.ini).
create_role_and_databases mlflow "$MLFLOW_DB_PASSWORD" mlflow mlflow_auth
