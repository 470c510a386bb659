# yoloforge on CPU: docker build -t yoloforge . && docker run --rm yoloforge train --help
# (README.md, section Docker). Extras: docker build --build-arg EXTRAS=track,export -t yoloforge .
FROM python:3.12-slim

ARG EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    YOLOFORGE_HOME=/cache/yoloforge \
    YOLOFORGE_CONFIG_DIR=/cache/config \
    MPLCONFIGDIR=/cache/matplotlib

# torch's CPU wheels from the PyTorch index (PyPI's Linux wheels bring CUDA, about 5 GB more);
# a layer of its own, so a change to the code does not download torch again
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.1" "torchvision>=0.16"

# the package from this checkout (.dockerignore keeps runs, data and caches out)
COPY pyproject.toml README.md /tmp/yoloforge/
COPY yoloforge /tmp/yoloforge/yoloforge
RUN pip install "/tmp/yoloforge${EXTRAS:+[$EXTRAS]}" \
    && rm -rf /tmp/yoloforge \
    && useradd --create-home --uid 1000 --user-group yolo \
    && mkdir -p /cache /work \
    && chmod 1777 /cache /work

# not root; `docker run --user "$(id -u):$(id -g)"` writes the mounted runs folder as you
USER 1000:1000
WORKDIR /work
ENTRYPOINT ["yoloforge"]
CMD ["--help"]
