# GPU worker image: CUDA PyTorch base; the project installs on top without replacing torch.
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY promptehr ./promptehr
COPY model ./model
COPY service ./service
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# torch==2.13.0 is already in the base image, so pip keeps its CUDA build.
# The source is removed once installed: a promptehr/ folder in the working directory would shadow
# the installed package (python -m puts the working directory first on sys.path).
# DL3013 asks for pinned versions: this installs the project itself, its pins are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install ".[service]" \
 && rm -rf /src
COPY docker/entrypoint-worker.sh /usr/local/bin/entrypoint-worker.sh
# The model volume's mount point exists and belongs to the app user: Docker copies an image directory's
# ownership into a fresh named volume, so without this the volume comes up root-owned and the worker
# cannot write a checkpoint.
RUN useradd --create-home --uid 10001 app && chmod +x /usr/local/bin/entrypoint-worker.sh \
 && mkdir -p /var/lib/promptehr/models \
 && chown -R 10001:10001 /var/lib/promptehr
USER 10001:10001
WORKDIR /var/lib/promptehr
ENTRYPOINT ["/usr/local/bin/entrypoint-worker.sh"]
