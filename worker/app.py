"""The Celery app whose workers run the pumps.

The event queue is not a Celery task queue: each pump consumes it with its own
kombu consumer (worker.pump), so a message costs no task-protocol overhead and
batches can be acked as one. Celery supplies the process model around it:
the worker command line, prefork children (one pump each, restarted when a
child dies), signals, logging and remote control.

- prefork pool (default): every child starts a pump on `worker_process_init`
  and stops it on `worker_process_shutdown`;
- solo or threads pool: one pump in the worker's main process, started and
  stopped by a worker bootstep.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from celery import Celery, bootsteps, signals

from fashionai_pipeline.producers.broker import transport_options
from fashionai_pipeline.producers.settings import Settings
from fashionai_pipeline.worker.logs import install_redaction
from fashionai_pipeline.worker.pump import Pump

log = logging.getLogger("fashionai.worker")


@dataclass
class WorkerProcess:
    """What this process knows about its worker role; one per process (`_process`).

    Celery's signals call plain functions, so this state cannot be passed down;
    it is set by `create_app` in the main process and inherited by each
    prefork child through the fork.
    """

    settings: Settings | None = None
    pump: Pump | None = None  # a prefork child's pump
    signals_connected: bool = False
    frozen_objects: int = 0  # gc.get_freeze_count() after the last freeze_startup_heap()

    def secrets(self) -> list[str]:
        """Every token the deployment holds (each tenant's too), for log redaction."""
        return [] if self.settings is None else self.settings.secrets()


_process = WorkerProcess()


def create_app(settings: Settings) -> Celery:
    """Build the app. Connects to nothing; one app per process is expected.

    Raises ConfigurationError when the deployment names no state store
    (FASHIONAI_STATE_URL with a broker that is not Redis): better at start than
    at the first retry.
    """
    settings.state_store_url()
    app = Celery("fashionai", broker=settings.broker_url, set_as_current=True)
    app.conf.update(
        broker_transport_options=transport_options(settings, timeout=10.0),
        broker_connection_retry_on_startup=True,
        task_default_queue=f"{settings.queue}.control",
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_redirect_stdouts=False,
        worker_log_format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        worker_soft_shutdown_timeout=settings.shutdown_timeout,
    )
    _process.settings = settings
    app.steps["worker"].add(PumpStep)
    _connect_signals()
    return app


class PumpStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs a pump in the main process unless prefork children run their own."""

    requires: ClassVar[set[str]] = {"celery.worker.components:Pool"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.pump: Pump | None = None

    def start(self, parent: Any) -> None:
        from celery.concurrency.prefork import TaskPool

        settings = _process.settings
        assert settings is not None, "create_app() sets the settings before Celery starts steps"
        install_redaction(_process.secrets())
        _quiet_per_request_loggers(settings)
        if settings.metrics_port:
            from fashionai_pipeline.worker import metrics

            metrics.serve(settings.metrics_port)
            log.info("metrics on http://0.0.0.0:%d/metrics", settings.metrics_port)
        if isinstance(parent.pool, TaskPool):
            # Logging was not set up yet when the main process froze its heap.
            log.info("main process heap frozen before the pool forked: %d objects", _process.frozen_objects)
            return
        self.pump = Pump(settings)
        self.pump.start()
        freeze_startup_heap()

    def stop(self, parent: Any) -> None:
        if self.pump is not None:
            self.pump.stop()
            self.pump = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)


def freeze_startup_heap() -> None:
    """Move everything allocated so far (Celery, kombu, the pump) out of the GC's reach.

    Those objects live as long as the process. Left in the collector's oldest
    generation, every full collection walks all of them and stops the delivery
    thread meanwhile, which set the enqueue->cache p99; frozen, full collections
    are short (figures: docs/PERFORMANCE.md, "Where the time went at the tail"). Called in the main
    process before the pool forks and in each child once its pump runs.
    """
    gc.collect()
    gc.freeze()
    _process.frozen_objects = gc.get_freeze_count()
    log.info("startup heap frozen: %d objects left out of garbage collection", _process.frozen_objects)


def _connect_signals() -> None:
    if _process.signals_connected:
        return
    _process.signals_connected = True
    signals.worker_init.connect(_main_process_ready, weak=False)
    signals.worker_process_init.connect(_child_started, weak=False)
    signals.worker_process_shutdown.connect(_child_stopping, weak=False)
    signals.after_setup_logger.connect(_logging_ready, weak=False)


def _quiet_per_request_loggers(settings: Settings) -> None:
    # httpx logs every request at INFO: thousands of lines a second under load.
    if settings.log_level != "DEBUG":
        logging.getLogger("httpx").setLevel(logging.WARNING)


def _main_process_ready(**_: Any) -> None:
    # Before the pool forks: children then share these pages with the main
    # process for good, because their own collections never walk frozen objects
    # (an unfrozen collection writes to every object's header, copying its page).
    freeze_startup_heap()


def _child_started(**_: Any) -> None:
    settings = _process.settings
    if settings is None:
        return
    install_redaction(_process.secrets())
    _quiet_per_request_loggers(settings)
    pump = Pump(settings)
    pump.start()
    _process.pump = pump
    freeze_startup_heap()


def _child_stopping(**_: Any) -> None:
    pump, _process.pump = _process.pump, None
    if pump is not None:
        pump.stop()


def _logging_ready(logger: logging.Logger, **_: Any) -> None:
    if _process.settings is not None:
        install_redaction(_process.secrets(), logger)
