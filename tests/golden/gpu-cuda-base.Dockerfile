# Image of reprobox experiment 1f02963194a9, rendered from reprobox's templates/Dockerfile.j2.
# Build it with `reprobox build 1f02963194a9`: it assembles the context (lock, wheels, the code at
# commit a691346f3bc1, the hash-checked files from this machine's wheelhouse); the Python
# packages install offline, with no secret mounted.
FROM nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04

# The base has no Python: install CPython 3.11.7 exactly (a relocatable
# python-build-standalone build, fetched by uv), laid out like the official images.
ENV LANG=C.UTF-8 \
    PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin
ARG REPROBOX_INPUTS_PYTHON
RUN --mount=type=bind,source=tools,target=/tmp/reprobox/tools \
    --mount=type=cache,target=/root/.cache/uv,id=reprobox-uv \
    --mount=type=secret,id=reprobox-env \
    --mount=type=secret,id=reprobox-ca \
    set -eu; \
    if [ -r /run/secrets/reprobox-env ]; then . /run/secrets/reprobox-env; fi; \
    /tmp/reprobox/tools/uv python install --install-dir /opt/python 3.11.7; \
    for exe in /opt/python/cpython-3.11.7-*/bin/*; do \
        ln -sf "$exe" "/usr/local/bin/${exe##*/}"; \
    done; \
    ln -sf python3.11 /usr/local/bin/python3; \
    ln -sf python3 /usr/local/bin/python; \
    python3 --version

# System packages that own the native libraries the Python packages load.
# Pinned to the versions on the capture host (ubuntu jammy).
RUN --mount=type=cache,target=/var/cache/apt,id=reprobox-apt-ubuntu-jammy,sharing=locked \
    --mount=type=cache,target=/var/lib/apt/lists,id=reprobox-apt-lists-ubuntu-jammy,sharing=locked \
    --mount=type=secret,id=reprobox-env \
    --mount=type=secret,id=reprobox-ca \
    set -eu; \
    if [ -r /run/secrets/reprobox-env ]; then . /run/secrets/reprobox-env; fi; \
    missing=''; \
    for spec in libbz2-1.0=1.0.8-5+b1 libc6=2.36-9+deb12u14 libcrypt1=1:4.4.33-2 libffi8=3.4.4-1 liblzma5=5.4.1-1 libncursesw6=6.4-4 libnsl2=1.3.0-2 libreadline8=8.2-1.3 libsqlite3-0=3.40.1-2+deb12u2 'libssl3=3.0.19-1~deb12u2' libtcl8.6=8.6.13+dfsg-2 libtinfo6=6.4-4 libtirpc3=1.3.3+ds-1 libtk8.6=8.6.13-2 libuuid1=2.38.1-5+deb12u3 zlib1g=1:1.2.13.dfsg-1; do \
        have="$(dpkg-query -W -f='${Status} ${Version}' "${spec%%=*}" 2>/dev/null || true)"; \
        case "$spec" in \
            *=*) [ "$have" = "install ok installed ${spec#*=}" ] || missing="$missing $spec" ;; \
            *) case "$have" in "install ok installed "*) ;; *) missing="$missing $spec" ;; esac ;; \
        esac; \
    done; \
    if [ -n "$missing" ]; then \
        rm -f /etc/apt/apt.conf.d/docker-clean; \
        set -- -o APT::Keep-Downloaded-Packages=true; \
        if [ -r /run/secrets/reprobox-ca ]; then set -- "$@" -o Acquire::https::CAInfo=/run/secrets/reprobox-ca; fi; \
        apt-get "$@" update; \
        install=''; \
        for spec in $missing; do \
            name="${spec%%=*}"; \
            if [ "$name" != "$spec" ] && apt-cache madison "$name" | cut -d'|' -f2 | tr -d ' ' | grep -qxF -- "${spec#*=}"; then \
                install="$install $spec"; \
            elif apt-cache show --no-all-versions "$name" >/dev/null 2>&1; then \
                [ "$name" = "$spec" ] || echo "reprobox: warning: $spec is no longer in the archive; installing its current $name" >&2; \
                install="$install $name"; \
            else \
                echo "reprobox: warning: system package $name is not available in this distribution" >&2; \
            fi; \
        done; \
        if [ -n "$install" ]; then \
            DEBIAN_FRONTEND=noninteractive apt-get "$@" install --yes --no-install-recommends --allow-downgrades $install; \
        fi; \
    fi; \
    rm -f /etc/reprobox/substitutions; \
    for spec in libbz2-1.0=1.0.8-5+b1 libc6=2.36-9+deb12u14 libcrypt1=1:4.4.33-2 libffi8=3.4.4-1 liblzma5=5.4.1-1 libncursesw6=6.4-4 libnsl2=1.3.0-2 libreadline8=8.2-1.3 libsqlite3-0=3.40.1-2+deb12u2 'libssl3=3.0.19-1~deb12u2' libtcl8.6=8.6.13+dfsg-2 libtinfo6=6.4-4 libtirpc3=1.3.3+ds-1 libtk8.6=8.6.13-2 libuuid1=2.38.1-5+deb12u3 zlib1g=1:1.2.13.dfsg-1; do \
        name="${spec%%=*}"; want="${spec#*=}"; \
        got="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"; \
        case "$got" in "install ok installed "*) got="${got#install ok installed }" ;; *) got=- ;; esac; \
        if [ "$got" != "$want" ]; then mkdir -p /etc/reprobox; echo "$name $want $got" >> /etc/reprobox/substitutions; fi; \
    done

# Locked Python packages.
# Installed exactly as locked, offline from the host's hash-checked wheelhouse: no index, no secret.
ARG REPROBOX_INPUTS_LOCK_1
RUN --mount=type=bind,source=lock/all.txt,target=/tmp/reprobox/lock/all.txt \
    --mount=type=bind,source=wheels/lock-all,target=/tmp/reprobox/wheels/lock-all \
    --mount=type=bind,source=tools,target=/tmp/reprobox/tools \
    set -eu; \
    /tmp/reprobox/tools/uv pip install --python python3.11 --system --break-system-packages \
        --require-hashes --no-deps --offline --no-index --no-cache --find-links /tmp/reprobox/wheels/lock-all --link-mode copy \
        --requirement /tmp/reprobox/lock/all.txt; \
    python3.11 -I /tmp/reprobox/tools/finish_layer.py /tmp/reprobox/lock/all.txt

# The project's own packages, installed where `reprobox run` mounts the checkout, so an editable
# install in the image points into the mounted code at run time. Editable installs are PEP 660
# ones (--use-pep517 for pip; uv always): their metadata and entry points live in site-packages,
# not in the folder the mounted checkout hides (a legacy `setup.py develop` would leave its
# egg-info there).
# The install sees meta/ (what it reads: the packages' metadata and layout, or all of the code
# when it may read more), mounted for this step only; the code itself is copied in last, so a
# change to the code alone rebuilds no install step.
ARG REPROBOX_INPUTS_LOCAL
RUN --mount=type=bind,source=wheels/local,target=/tmp/reprobox/wheels/local \
    --mount=type=bind,source=meta,target=/workspace,rw \
    --mount=type=bind,source=tools,target=/tmp/reprobox/tools \
    set -eu; \
    /tmp/reprobox/tools/uv pip install --python python3.11 --system --break-system-packages --no-deps --offline --no-index --no-cache --find-links /tmp/reprobox/wheels/local --link-mode copy \
        --editable /workspace; \
    extra="$(python3.11 /tmp/reprobox/tools/prune.py /tmp/reprobox/tools/packages.txt)"; \
    if [ -n "$extra" ]; then /tmp/reprobox/tools/uv pip uninstall --python python3.11 --system --break-system-packages $extra; fi

# The project's code at the experiment's commit (+ patch), where the editable installs point.
COPY ["src/", "/workspace/"]

WORKDIR /workspace
LABEL reprobox.experiment="1f02963194a9" \
      reprobox.env-digest="sha256:66f21520598795fbee632275a63f67d66e2b37e7fd6d8dd4ce7764a62edb68e6" \
      reprobox.python="3.11.7" \
      org.opencontainers.image.title="reprobox experiment train" \
      org.opencontainers.image.revision="a691346f3bc1d6cb7711b781dba78bfa31248d19" \
      org.opencontainers.image.base.name="nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04"
