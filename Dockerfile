# One image for the web tier and the workers; compose picks the command.
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 LDM_DATA_DIR=/data
WORKDIR /app
COPY requirements.txt .
RUN pip install "$(grep -E '^torch==' requirements.txt)" && pip install -r requirements.txt
COPY . .
RUN useradd --create-home ldm && mkdir -p /data && chown ldm /data
USER ldm
EXPOSE 8000
# No --proxy-headers: daphne would take the first X-Forwarded-For entry, which a client can write.
# With LDM_BEHIND_PROXY=true ldmsite reads the last one, the entry the proxy itself appended.
CMD ["sh", "-c", "python manage.py migrate --noinput && daphne --bind 0.0.0.0 --port 8000 ldmsite.asgi:application"]
