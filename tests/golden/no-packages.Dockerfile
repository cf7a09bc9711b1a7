# Image of reprobox experiment 18b6f4b2fe0e, rendered from reprobox's templates/Dockerfile.j2.
# Build it with `reprobox build 18b6f4b2fe0e`: it assembles the context (lock, wheels, the code at
# commit a691346f3bc1, the hash-checked files from this machine's wheelhouse); the Python
# packages install offline, with no secret mounted.
FROM python:3.11.7-slim-bookworm

# No packages to install: remove what the base brings that the capture did not have.
ARG REPROBOX_INPUTS_PRUNE
RUN --mount=type=bind,source=tools,target=/tmp/reprobox/tools \
    set -eu; \
    extra="$(python3.11 /tmp/reprobox/tools/prune.py /tmp/reprobox/tools/packages.txt)"; \
    if [ -n "$extra" ]; then /tmp/reprobox/tools/uv pip uninstall --python python3.11 --system --break-system-packages $extra; fi

WORKDIR /workspace
LABEL reprobox.experiment="18b6f4b2fe0e" \
      reprobox.env-digest="sha256:67c680d0bd351c0158221c3426f5cb47f8df29dc97bff2bbe5355546c260559a" \
      reprobox.python="3.11.7" \
      org.opencontainers.image.title="reprobox experiment train" \
      org.opencontainers.image.revision="a691346f3bc1d6cb7711b781dba78bfa31248d19" \
      org.opencontainers.image.base.name="python:3.11.7-slim-bookworm"
