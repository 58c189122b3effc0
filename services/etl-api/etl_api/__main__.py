"""``python -m etl_api``: the ETL HTTP API on uvicorn (port ``ETL_PORT``, default 8103)."""

from __future__ import annotations

import logging

import uvicorn

from etl_api.app import create_app
from etl_api.settings import EtlSettings
from shared.logs import setup_logging


def main() -> None:
    settings = EtlSettings()  # type: ignore[call-arg]
    setup_logging("etl-api", settings.log_level, settings.log_format, fields={"hop": "etl"})
    logging.getLogger(__name__).info("settings: %s", settings.masked())
    # log_config=None: uvicorn keeps its hands off logging, its records reach shared.logs' handler
    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level="warning", log_config=None, timeout_graceful_shutdown=10
    )


if __name__ == "__main__":
    main()
