#!/bin/sh
# minio-init (compose.yaml): the two buckets, and one S3 user per bucket whose policy reaches that bucket
# alone, so that the MLflow server cannot touch the DVC remote and DVC users cannot touch MLflow's artifacts.
# The root credentials stay with the admin. Safe to rerun: buckets are kept, users and policies updated.
# Only shell built-ins and `mc`: the MinIO image has little else.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}" "${MLFLOW_BUCKET:?}" "${DVC_BUCKET:?}"
: "${MLFLOW_S3_ACCESS_KEY:?}" "${MLFLOW_S3_SECRET_KEY:?}" "${DVC_S3_ACCESS_KEY:?}" "${DVC_S3_SECRET_KEY:?}"
if [ "$MLFLOW_S3_ACCESS_KEY" = "$DVC_S3_ACCESS_KEY" ] || [ "$MLFLOW_BUCKET" = "$DVC_BUCKET" ]; then
    echo "minio-init: MLflow and DVC need their own S3 user and bucket; set different MLFLOW_S3_ACCESS_KEY and DVC_S3_ACCESS_KEY (and buckets) in docker/.env" >&2
    exit 1
fi

bucket_policy() {  # $1: a bucket. Listing it and reading, writing and deleting its objects; nothing else
    printf '%s\n' "{\"Version\": \"2012-10-17\", \"Statement\": [
  {\"Effect\": \"Allow\", \"Action\": [\"s3:GetBucketLocation\", \"s3:ListBucket\", \"s3:ListBucketMultipartUploads\"],
   \"Resource\": [\"arn:aws:s3:::$1\"]},
  {\"Effect\": \"Allow\", \"Action\": [\"s3:GetObject\", \"s3:PutObject\", \"s3:DeleteObject\", \"s3:AbortMultipartUpload\",
                                   \"s3:ListMultipartUploadParts\"],
   \"Resource\": [\"arn:aws:s3:::$1/*\"]}]}"
}

grant() {  # $1: access key, $2: secret key, $3: the one bucket that user may use
    policy="nichetune-$3"
    bucket_policy "$3" > "/tmp/$policy.json"
    mc admin policy create team "$policy" "/tmp/$policy.json"
    mc admin user add team "$1" "$2"
    # a user made by an earlier compose.yaml had the built-in readwrite policy, which covers every bucket
    mc admin policy detach team readwrite --user "$1" >/dev/null 2>&1 || true
    mc admin policy attach team "$policy" --user "$1" || echo "minio-init: $policy is already attached to its user"
}

mc alias set team http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing "team/$MLFLOW_BUCKET" "team/$DVC_BUCKET"
grant "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY" "$MLFLOW_BUCKET"
grant "$DVC_S3_ACCESS_KEY" "$DVC_S3_SECRET_KEY" "$DVC_BUCKET"
