# GPU worker image: CUDA PyTorch base; the project installs on top without replacing torch.
FROM pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY model ./model
COPY service ./service
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# torch==2.13.0 is already in the base image, so pip keeps its CUDA build.
RUN pip install .
COPY docker/entrypoint-worker.sh /usr/local/bin/entrypoint-worker.sh
RUN useradd --create-home --uid 10001 app && chmod +x /usr/local/bin/entrypoint-worker.sh
USER app
ENTRYPOINT ["/usr/local/bin/entrypoint-worker.sh"]
