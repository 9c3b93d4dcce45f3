# The code location image: the pipeline and Dagster, serving one code location over gRPC. The same image
# runs each run's worker under Dagster's Docker or Kubernetes run launcher (README, "Scale-out").
#
#   docker build -t b1twilio-pipeline .
#   one company:   docker run -p 4000:4000 --env-file b1.env b1twilio-pipeline
#   a company of the companies file (B1TWILIO_COMPANIES mounted into the container):
#                  docker run -p 4000:4000 --env-file b1.env -v /etc/b1twilio:/etc/b1twilio:ro \
#                      b1twilio-pipeline dagster code-server start -h 0.0.0.0 -p 4000 \
#                      -m b1twilio_pipeline.company_location -a de01
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home
WORKDIR /opt/dagster/app

COPY pyproject.toml README.md ./
COPY b1twilio_pipeline ./b1twilio_pipeline
COPY b1twilio_sim ./b1twilio_sim
RUN pip install ".[deploy]"

# No root at run time; DAGSTER_HOME gets the instance's dagster.yaml (mounted, or baked in by a derived
# image) so run workers write to the same PostgreSQL as the daemon.
RUN useradd --uid 10001 --create-home b1twilio && mkdir -p "$DAGSTER_HOME" && chown b1twilio "$DAGSTER_HOME"
USER b1twilio

EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "b1twilio_pipeline.definitions"]
