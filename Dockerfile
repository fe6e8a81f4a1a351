# fhircare service image (used by docker-compose.yml): a regular (non-editable) install of
# the package, its knowledge files (profiles/, mappings/) inside it, run as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY fhircare ./fhircare
COPY profiles ./profiles
COPY mappings ./mappings
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home fhircare \
    && mkdir -p /data && chown fhircare:fhircare /data
USER fhircare
WORKDIR /data
ENV FHIRCARE_DATA=/data \
    FHIRCARE_HOST=0.0.0.0 \
    FHIRCARE_PORT=8000 \
    FHIRCARE_MLLP_PORT=2575 \
    FHIRCARE_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 8000 2575
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "fhircare.healthcheck"]
CMD ["fhircare", "serve"]
