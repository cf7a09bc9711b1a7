# Image of reprobox experiment 1f02963194a9, rendered from reprobox's templates/Dockerfile.j2.
# Build it with `reprobox build 1f02963194a9`: it assembles the context (lock, wheels, the code at
# commit a691346f3bc1, the hash-checked files from this machine's wheelhouse); the Python
# packages install offline, with no secret mounted.
FROM python:3.11.7-slim-bookworm

# System packages that own the native libraries the Python packages load.
# Pinned to the versions on the capture host (debian bookworm).
RUN set -eu; \
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
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -f /etc/reprobox/substitutions; \
    for spec in libbz2-1.0=1.0.8-5+b1 libc6=2.36-9+deb12u14 libcrypt1=1:4.4.33-2 libffi8=3.4.4-1 liblzma5=5.4.1-1 libncursesw6=6.4-4 libnsl2=1.3.0-2 libreadline8=8.2-1.3 libsqlite3-0=3.40.1-2+deb12u2 'libssl3=3.0.19-1~deb12u2' libtcl8.6=8.6.13+dfsg-2 libtinfo6=6.4-4 libtirpc3=1.3.3+ds-1 libtk8.6=8.6.13-2 libuuid1=2.38.1-5+deb12u3 zlib1g=1:1.2.13.dfsg-1; do \
        name="${spec%%=*}"; want="${spec#*=}"; \
        got="$(dpkg-query -W -f='${Status} ${Version}' "$name" 2>/dev/null || true)"; \
        case "$got" in "install ok installed "*) got="${got#install ok installed }" ;; *) got=- ;; esac; \
        if [ "$got" != "$want" ]; then mkdir -p /etc/reprobox; echo "$name $want $got" >> /etc/reprobox/substitutions; fi; \
    done

# Classic builder (no BuildKit): the context files are copied in (and removed at the end); no
# index configuration is passed: the Python packages install from the copied wheels only.
COPY ["tools/", "/tmp/reprobox/tools/"]
COPY ["wheels/", "/tmp/reprobox/wheels/"]
COPY ["lock/", "/tmp/reprobox/lock/"]

# Locked Python packages.
# Installed exactly as locked, offline from the host's hash-checked wheelhouse: no index, no secret.
RUN set -eu; \
    PIP_ROOT_USER_ACTION=ignore python3.11 -m pip install --no-deps --require-hashes --no-input --disable-pip-version-check --no-compile \
        --no-index --no-cache-dir --find-links /tmp/reprobox/wheels/lock-all \
        --requirement /tmp/reprobox/lock/all.txt; \
    python3.11 -I /tmp/reprobox/tools/finish_layer.py /tmp/reprobox/lock/all.txt

# The project's own packages, installed where `reprobox run` mounts the checkout, so an editable
# install in the image points into the mounted code at run time. Editable installs are PEP 660
# ones (--use-pep517 for pip; uv always): their metadata and entry points live in site-packages,
# not in the folder the mounted checkout hides (a legacy `setup.py develop` would leave its
# egg-info there).
COPY ["src/", "/workspace/"]
RUN set -eu; \
    PIP_ROOT_USER_ACTION=ignore python3.11 -m pip install --no-deps --no-input --disable-pip-version-check --use-pep517 --no-index --no-cache-dir --find-links /tmp/reprobox/wheels/local \
        --editable /workspace; \
    extra="$(python3.11 /tmp/reprobox/tools/prune.py /tmp/reprobox/tools/packages.txt)"; \
    if [ -n "$extra" ]; then PIP_ROOT_USER_ACTION=ignore python3.11 -m pip uninstall --yes $extra; fi
RUN rm -rf /tmp/reprobox

WORKDIR /workspace
LABEL reprobox.experiment="1f02963194a9" \
      reprobox.env-digest="sha256:66f21520598795fbee632275a63f67d66e2b37e7fd6d8dd4ce7764a62edb68e6" \
      reprobox.python="3.11.7" \
      org.opencontainers.image.title="reprobox experiment train" \
      org.opencontainers.image.revision="a691346f3bc1d6cb7711b781dba78bfa31248d19" \
      org.opencontainers.image.base.name="python:3.11.7-slim-bookworm"
