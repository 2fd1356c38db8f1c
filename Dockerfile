# labtrain: one image for the API, the workers and the migrations (see docker-compose.yml).
#
#   docker build -t labtrain .                         # PyTorch's CPU build
#   docker build -t labtrain:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu126 .   # a CUDA build, same version
#
# PyTorch comes from TORCH_INDEX at the version constraints.txt pins; every other dependency from
# PyPI with the same constraints, as `make install` does.
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LABTRAIN_HOST=0.0.0.0 \
    LABTRAIN_DATA_DIR=/var/lib/labtrain \
    LABTRAIN_ARTIFACT_DIR=/var/lib/labtrain/artifacts

WORKDIR /src

# PyTorch first, in a layer of its own: it stays cached while the code changes.
COPY constraints.txt ./
RUN pip install -c constraints.txt torch --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY api ./api
COPY cli ./cli
COPY core ./core
COPY labtrain ./labtrain
COPY migrations ./migrations
COPY ml ./ml
COPY ui ./ui
COPY worker ./worker
RUN pip install -c constraints.txt . \
    && rm -rf /src \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/labtrain --create-home labtrain \
    && mkdir -p /var/lib/labtrain/artifacts \
    && chown -R labtrain:labtrain /var/lib/labtrain

# Never root: the API and the workers only need their data directory (a volume in compose).
USER labtrain
WORKDIR /var/lib/labtrain
EXPOSE 8000

ENTRYPOINT ["labtrain"]
# The API alone (no embedded Redis, no worker): LABTRAIN_REDIS_URL and LABTRAIN_API_KEYS must be set.
CMD ["up", "--host", "0.0.0.0", "--workers", "0"]
