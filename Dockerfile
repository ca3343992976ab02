# One image for the four services (and the one-shot init step); `python -m services.<name>` picks one.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml ./
COPY shared shared
COPY services services
# Dependencies only: the code runs from /app below, migrations and all.
RUN pip install . && pip uninstall -y arrears

FROM python:3.11-slim AS runtime
RUN useradd --system --uid 10001 --create-home arrears
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root shared shared
COPY --chown=root:root services services
COPY --chown=root:root scripts/__init__.py scripts/stack.py scripts/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The bureau's archive and drop folders: a fresh named volume takes this ownership.
RUN mkdir -p /var/lib/arrears/bureau && chown arrears /var/lib/arrears/bureau
USER arrears
EXPOSE 8001 8002 8003 8004
CMD ["python", "-m", "services.ledger"]
