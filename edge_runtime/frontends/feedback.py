"""fedge's feedback and health extension, as both front ends serve it: ``POST /v2/models/{name}/feedback`` and
``GET /v2/models/{name}/health`` on the REST port, ``fedge.feedback.v1.FeedbackService`` on the gRPC port. A
correction is stored off the event loop, on the monitor's own thread, so a flood of them queues there and never
holds up inference."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fedge.edge_runtime.common.errors import FeedbackOff
from fedge.edge_runtime.monitoring.monitor import FEEDBACK_OFF, Monitor
from fedge.edge_runtime.serving.data_plane import DataPlane

SETTLE_S = 1.0  # how long a correction waits for the answer it names to be observed (it was answered just now)


class FeedbackApi:
    def __init__(self, plane: DataPlane, monitor: Monitor | None) -> None:
        self.plane, self.monitor = plane, monitor
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedge-feedback")

    async def feedback(self, model: str, body: dict[str, Any]) -> dict[str, Any]:
        monitor = self.monitor
        if monitor is None or not monitor.capturing:
            raise FeedbackOff(FEEDBACK_OFF)

        def store() -> dict[str, Any]:
            self.plane.observers.settle(SETTLE_S)
            return monitor.feedback(model, body)

        return await asyncio.get_running_loop().run_in_executor(self._thread, store)

    async def health(self, model: str) -> dict[str, Any]:
        if self.monitor is None:
            raise FeedbackOff("monitoring is off on this device (fedge edge serve --no-monitoring)")
        monitor = self.monitor

        def read() -> dict[str, Any]:
            self.plane.observers.settle(SETTLE_S)  # the answers given so far are in it
            return monitor.health(model)

        return await asyncio.get_running_loop().run_in_executor(self._thread, read)
