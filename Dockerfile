# The globaldns image: `docker build -t globaldns:0.1.0 .` (used by deploy/kubernetes).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY globaldns ./globaldns
RUN pip install --no-cache-dir . && useradd --system --uid 10001 globaldns
USER 10001
EXPOSE 5353/udp 5353/tcp 9153/tcp
ENTRYPOINT ["globaldns", "serve"]
CMD ["--config", "/etc/globaldns/config.yaml"]
