"""A stand-in for the service's API, for developing the pages before the service exists.

It serves `frontend/` and the documented JSON shapes, and plays a synthetic search
whose events follow docs/engine-api.md. Browser tests of the final product drive
the real app instead. Run it with `python -m tests.frontend.fake_service [port]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import plotly
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from backend.analysis import OPERATIONS, graph_from_events

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
FIELDS = [
    {"name": "preset", "type": "str", "default": "digits", "unit": "", "help": "preset",
     "choices": ["tiny", "digits", "fashion-mnist", "cifar10"]},
    {"name": "name", "type": "str", "default": "", "unit": "", "help": "label", "choices": None},
    {"name": "dataset", "type": "str", "default": "digits", "unit": "", "help": "data set",
     "choices": ["digits", "fashion-mnist", "mnist", "cifar10"]},
    {"name": "epochs", "type": "int", "default": 9, "unit": "epochs", "help": "total epochs",
     "choices": None},
    {"name": "budget", "type": "str, int or null", "default": None, "unit": "bytes",
     "help": "budget", "choices": None},
    {"name": "lr", "type": "float", "default": 0.025, "unit": "", "help": "learning rate",
     "choices": None},
    {"name": "ops", "type": "list of str", "default": list(OPERATIONS), "unit": "",
     "help": "operations", "choices": list(OPERATIONS)},
]


class FakeSearch:
    """A synthetic search that emits engine-shaped events on a background thread."""

    def __init__(self, name: str, epochs: int = 9, pace: float = 0.6) -> None:
        self.id = uuid.uuid4().hex
        self.name = name
        self.epochs = epochs
        self.pace = pace
        self.events: list[dict[str, Any]] = []
        self.state = "queued"
        self.created = time.time()
        self.error: str | None = None
        self.random = random.Random(1)

    def emit(self, kind: str, epoch: int | None, **data: Any) -> None:
        self.events.append(
            {"seq": len(self.events), "type": kind, "time": time.time(), "epoch": epoch,
             "data": data}
        )

    def structure(self, index: int, section: int, cell_type: str) -> dict[str, Any]:
        pruners: list[dict[str, Any]] = []
        for target in range(2, 5):
            for source in range(target):
                for op in OPERATIONS:
                    pruners.append({"id": f"c{index}.e{source}_{target}.{op}", "kind": "op",
                                    "source": source, "target": target, "op": op, "size": 10})
        for source in ["stem", *(f"c{k}" for k in range(index))]:
            pruners.append({"id": f"c{index}.in1.{source}", "kind": "input1", "source": source,
                            "size": 5})
        return {"index": index, "type": cell_type, "section": section, "channels": 8,
                "resolution": 8, "nodes": 3, "pruners": pruners}

    def run(self) -> None:
        self.state = "running"
        sections = [["normal", "normal"], ["reduction"], ["normal"]]
        self.emit("search_started", None, config={"gate_init": 0.5}, budget=2**22,
                  targets=[0.6, 0.5, None], sections=sections, predicted_memory=[1, 2, 3])
        weights: dict[str, float] = {}
        cells = 0
        for epoch in range(self.epochs):
            section = min(2, epoch // 3)
            if epoch % 3 == 0 and epoch < 9:
                added = []
                for cell_type in sections[section]:
                    added.append(self.structure(cells, section, cell_type))
                    cells += 1
                for cell in added:
                    weights.update({p["id"]: 0.5 for p in cell["pruners"]})
                self.emit("section_added", epoch, section=section, cells=added,
                          start_epoch=epoch)
            for batch in range(3):
                time.sleep(self.pace / 3)
                self.emit("batch", epoch, index=batch, batches=3, loss=1.0 / (epoch + 1))
            for pruner in weights:
                weights[pruner] += self.random.uniform(-0.35, 0.2)
            self.emit("pruner_snapshot", epoch,
                      pruners=[[p, w, int(w > 0)] for p, w in weights.items()])
            dead = [p for p, w in weights.items() if w < -0.3]
            for pruner in dead:
                del weights[pruner]
            if dead:
                self.emit("deadheaded", epoch, pruner_ids=dead, removed_nodes=[],
                          reason="gate_off")
            self.emit("epoch_end", epoch, section=section, train_accuracy=50 + epoch * 5,
                      test_accuracy=45 + epoch * 5, train_loss=1 / (epoch + 1),
                      test_loss=1.2 / (epoch + 1), compression=[0.9 - 0.05 * epoch] * cells,
                      targets=[0.6] * cells, memory_measured=2**21, memory_predicted=2**21,
                      budget=2**22, **{"lambda": 0.01 * 2**epoch}, lr=0.02, params=1000,
                      deadheaded_total=0, elapsed=time.time() - self.created)
        self.emit("finished", self.epochs - 1, state="succeeded", test_accuracy=90.0,
                  params=1000, compression=0.5)
        self.state = "succeeded"

    def public(self) -> dict[str, Any]:
        ends = [e for e in self.events if e["type"] == "epoch_end"]
        return {"id": self.id, "name": self.name, "state": self.state, "dataset": "digits",
                "config": {}, "progress": len(ends) / self.epochs,
                "epoch": ends[-1]["epoch"] if ends else 0, "epochs": self.epochs,
                "created_at": "", "started_at": "", "finished_at": None,
                "elapsed_seconds": time.time() - self.created, "eta_seconds": 10.0,
                "error": self.error, "baseline": 0, "reference_id": None,
                "best_test_accuracy": ends[-1]["data"]["test_accuracy"] if ends else None,
                "test_accuracy": None, "params": 1000, "compression": 0.5, "budget": 2**22,
                "attempts": 1, "worker": "fake"}


def create_app(pace: float = 0.6) -> FastAPI:
    app = FastAPI()
    searches: dict[str, FakeSearch] = {}

    def get(search_id: str) -> FakeSearch:
        if search_id not in searches:
            raise HTTPException(404, f"search {search_id} not found")
        return searches[search_id]

    @app.get("/api/config/fields")
    def fields() -> list[dict[str, Any]]:
        return FIELDS

    @app.get("/api/datasets")
    def datasets() -> list[dict[str, Any]]:
        return [{"name": "digits", "available": True, "location": "sklearn", "message": ""},
                {"name": "fashion-mnist", "available": False, "location": None,
                 "message": "files missing"}]

    @app.post("/api/estimate")
    async def estimate(request: Request) -> Any:
        body = await request.json()
        if body.get("epochs", 1) < 1:
            return JSONResponse(status_code=422, content={"detail": [
                {"loc": ["body", "epochs"], "msg": "must be at least 1", "type": "value_error"}]})
        return {"budget": 2**22, "hyper_connected_bytes": 2**23, "fits": True, "error": None,
                "sections": [{"section": 0, "cells": ["normal", "normal"],
                              "predicted_bytes": 2**21, "target": 0.6, "fits": True}]}

    @app.post("/api/searches", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        body = await request.json()
        search = FakeSearch(body.get("name", ""), pace=pace)
        searches[search.id] = search
        threading.Thread(target=search.run, daemon=True).start()
        return search.public()

    @app.get("/api/searches")
    def listing() -> dict[str, Any]:
        return {"items": [s.public() for s in searches.values()], "total": len(searches)}

    @app.get("/api/searches/{search_id}")
    def one(search_id: str) -> dict[str, Any]:
        return get(search_id).public()

    @app.get("/api/searches/{search_id}/metrics")
    def metrics(search_id: str) -> dict[str, Any]:
        ends = [e for e in get(search_id).events if e["type"] == "epoch_end"]
        return {"items": [{**e["data"], "epoch": e["epoch"]} for e in ends], "total": len(ends)}

    @app.get("/api/searches/{search_id}/sections")
    def sections(search_id: str) -> list[dict[str, Any]]:
        added = [e for e in get(search_id).events if e["type"] == "section_added"]
        return [{"section": e["data"]["section"], "cells": [c["index"] for c in e["data"]["cells"]],
                 "types": [c["type"] for c in e["data"]["cells"]], "target": 0.5,
                 "start_epoch": e["data"]["start_epoch"], "end_epoch": e["data"]["start_epoch"] + 2}
                for e in added]

    @app.get("/api/searches/{search_id}/graph")
    def graph(search_id: str, epoch: int | None = None) -> dict[str, Any]:
        return graph_from_events(list(get(search_id).events), epoch)

    @app.get("/api/searches/{search_id}/genotype")
    def genotype(search_id: str) -> dict[str, Any]:
        return {"format": "bonsai-genotype", "version": 1,
                "cells": graph_from_events(list(get(search_id).events), None)["cells"]}

    @app.get("/api/searches/{search_id}/events")
    async def events(search_id: str, request: Request) -> StreamingResponse:
        search = get(search_id)
        start = int(request.headers.get("last-event-id", -1)) + 1

        async def stream() -> Any:
            position = start
            while True:
                while position < len(search.events):
                    event = search.events[position]
                    yield f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"
                    position += 1
                    if event["type"] in ("finished", "failed"):
                        return
                await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/static/vendor/plotly.min.js")
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS)

    app.mount("/", StaticFiles(directory=ROOT / "frontend", html=True), name="frontend")
    return app


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8765
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")
