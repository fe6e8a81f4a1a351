# fhircare service image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhircare ./fhircare
COPY profiles ./profiles
COPY mappings ./mappings
RUN pip install --no-cache-dir -e .
ENV FHIRCARE_DATA=/data \
    FHIRCARE_HOST=0.0.0.0 \
    FHIRCARE_PORT=8000
VOLUME ["/data"]
EXPOSE 8000 2575
CMD ["fhircare", "serve"]
