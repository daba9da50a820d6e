#!/usr/bin/env bash
# Build the whalecast image with podman (`make image`), from the Dockerfile with its
# locked dependencies. Without a registry the base is made locally (scripts/base-image.sh).
#   IMAGE         the tag to build (default localhost/whalecast:local, the compose file's image)
#   PYTHON_IMAGE  the base (default: the local one from scripts/base-image.sh; pass
#                 python:3.11-slim-bookworm, the Dockerfile's own default, where a registry
#                 is reachable)
#   VARIANT       cpu (default), gpu or serve (no TensorFlow: requirements/serve.txt)
# When the host trusts extra certificate authorities (/usr/local/share/ca-certificates, as on
# networks that re-sign HTTPS), pip in the builder stage trusts them too: they go into a
# builder-only derivative of the base, never into the image. Prints the image name.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/podman-env.sh
. scripts/podman-env.sh

IMAGE=${IMAGE:-localhost/whalecast:local}
VARIANT=${VARIANT:-cpu}
PYTHON_IMAGE=${PYTHON_IMAGE:-$(scripts/base-image.sh)}
CA_DIR=${CA_DIR:-/usr/local/share/ca-certificates}

# The base plus the host's extra authorities, for the builder stage only.
trusting_base() {
  local context
  context=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the directory is local to this function
  trap "rm -rf '$context'" RETURN
  find "$CA_DIR" -name '*.crt' -type f -exec cp {} "$context/" \;
  cat > "$context/Containerfile" <<CONTAINERFILE
FROM $PYTHON_IMAGE
COPY *.crt /usr/local/share/ca-certificates/
USER 0
RUN update-ca-certificates
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt
CONTAINERFILE
  local tag
  tag="localhost/whalecast-build-base:$(cat "$context"/*.crt "$context/Containerfile" | sha256sum | cut -c1-12)"
  podman build --quiet -t "$tag" "$context" >&2
  echo "$tag"
}

build_image=$PYTHON_IMAGE
if [ -n "$(find "$CA_DIR" -name '*.crt' -type f 2>/dev/null | head -n1)" ]; then
  build_image=$(trusting_base)
fi
echo "image: building $IMAGE on $PYTHON_IMAGE" >&2
# the docker format: the OCI image format has no HEALTHCHECK, and podman would drop it
podman build --format docker --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" \
  --build-arg BUILD_IMAGE="$build_image" --build-arg VARIANT="$VARIANT" -t "$IMAGE" . >&2
echo "$IMAGE"
