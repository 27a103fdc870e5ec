# One image for every function: Knative Services pick the function with FUNCTION_SOURCE and
# FUNCTION_TARGET (knative/*.yaml) and set PORT; functions-framework loads it into its ASGI app and
# uvicorn serves it in the container's one process (functions/platform/serve.py). Also carries the `saga` CLI (the db-init and replay Jobs).
# Built by `make images`; the base image is pinned to an exact Python release, every package by the
# hashes in requirements/image.lock (`make lock`).

FROM python:3.11.14-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
# Runtime dependencies and the [replay] extra, the Kafka client the replay Job uses (`saga replay`;
# the saga's functions never import it: they talk HTTP to the broker; the console does, for dead letters). Not the [stack] extra: the local Knative
# stand-in has no place in a cluster.
COPY requirements/image.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r image.lock
COPY pyproject.toml README.md ./
COPY saga ./saga
COPY functions ./functions
RUN /opt/venv/bin/pip install --no-deps .

FROM python:3.11.14-slim
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PORT=8080
RUN useradd --uid 10001 --no-log-init --no-create-home --shell /usr/sbin/nologin saga
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# functions-framework loads the target from a source file path (FUNCTION_SOURCE, relative to /app).
COPY functions ./functions
# Byte-compiled here, as pip compiled the packages: a cold start reads bytecode, compiles nothing,
# and the read-only root filesystem could not keep what it compiled anyway.
RUN python -m compileall -q /app/functions /opt/venv/lib
USER 10001
EXPOSE 8080
CMD ["sh", "-c", "exec python -m functions.platform.serve --source \"$FUNCTION_SOURCE\" --target \"$FUNCTION_TARGET\" --host 0.0.0.0 --port \"$PORT\""]
