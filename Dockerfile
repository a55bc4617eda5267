# syntax=docker/dockerfile:1
# The globaldns image (deploy/kubernetes names it `globaldns:0.1.0`):
#   docker build -t globaldns:0.1.0 --build-arg VCS_REF=$(git rev-parse HEAD) .
# Two stages: the first builds globaldns's wheel and installs it with the pinned,
# hash-checked dependencies of requirements.lock into a venv; the runtime stage gets that
# venv only (no build tools, no pip cache, no source tree) and runs as a non-root user.
# The build stage has gcc so the wheel carries the compiled UDP fast lane (setup.py,
# globaldns/dns/_fastlane.c; without it the server would use the pure-Python path).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# The compiler of the fast lane; the distribution's current build of each (the runtime
# stage has neither).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/globaldns
COPY requirements.lock ./
RUN /opt/globaldns/bin/pip install --no-cache-dir --require-hashes -r requirements.lock
COPY pyproject.toml setup.py README.md ./
COPY globaldns ./globaldns
# --no-deps: every dependency came from the lock above, hash-checked.
RUN /opt/globaldns/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/globaldns/bin/pip install --no-cache-dir --no-deps /wheels/globaldns-*.whl \
    && /opt/globaldns/bin/globaldns check-config /src/globaldns/config/default.yaml

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG VCS_REF=unknown
LABEL org.opencontainers.image.title="globaldns" \
      org.opencontainers.image.description="Global DNS resolver for multi-cluster Kubernetes: *.global answers from live EndpointSlices, forwarding for the rest" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
# The same numeric IDs as the Deployment's securityContext (runAsUser 10001), so
# runAsNonRoot can verify them; no home directory, no login shell.
RUN groupadd --system --gid 10001 globaldns \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin globaldns
COPY --from=build /opt/globaldns /opt/globaldns
ENV PATH=/opt/globaldns/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /tmp
EXPOSE 5353/udp 5353/tcp 9153/tcp
ENTRYPOINT ["globaldns", "serve"]
CMD ["--config", "/etc/globaldns/config.yaml"]
