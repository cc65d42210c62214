"""What bench/e2e_comfy.py measures while ComfyUI runs a workflow: the device's memory from ``nvidia-smi``
(:class:`GpuSampler`), every websocket message of the bench's client (:class:`WsRecorder`), and the figures read from
them: per-node wall time and peaks (:func:`node_timings`), the end of the first DDIM step (:func:`first_step_at`),
and a readable table of a run (:func:`table`)."""
from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from typing import Any, Dict, List, Optional


class GpuSampler(threading.Thread):
    """``nvidia-smi`` memory.used of GPU 0 every 100 ms as (perf_counter, GiB); inert without nvidia-smi."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: List[tuple] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(["nvidia-smi", "-i", "0", "--query-gpu=memory.used",
                                          "--format=csv,noheader,nounits", "-lms", "100"], stdout=subprocess.PIPE, text=True)

    def run(self) -> None:
        if self.proc is None:
            return
        for line in self.proc.stdout:
            try:
                self.samples.append((time.perf_counter(), float(line.strip()) / 1024))
            except ValueError:
                continue

    def peak(self, t0: float, t1: float) -> Optional[float]:
        vals = [v for t, v in list(self.samples) if t0 <= t <= t1]
        return round(max(vals), 2) if vals else None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()


class WsRecorder(threading.Thread):
    """Every websocket message of our client id, stamped with perf_counter (aiohttp client in its own loop)."""

    def __init__(self, url: str, client_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.client_id, self.events, self.error = url, client_id, [], None
        self.ready, self.done = threading.Event(), threading.Event()

    def run(self) -> None:
        import asyncio

        async def main() -> None:
            import aiohttp

            async with aiohttp.ClientSession() as s:
                async with s.ws_connect(f"{self.url}/ws?clientId={self.client_id}", heartbeat=20) as ws:
                    self.ready.set()
                    while not self.done.is_set():
                        try:
                            msg = await ws.receive(timeout=0.5)
                        except asyncio.TimeoutError:
                            continue
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            self.events.append((time.perf_counter(), json.loads(msg.data)))
                        elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
        try:
            asyncio.run(main())
        except Exception as e:  # noqa: BLE001 - timing is optional; the run itself is judged from /history
            self.error = repr(e)
            self.ready.set()


def node_timings(events: list, prompt_id: str, prompt: dict, gpu: GpuSampler, t_end: float,
                 probe: list) -> list:
    """Per executed node: wall time from its ``executing`` event to the next one, the device's nvidia-smi peak
    meanwhile, and the probe's torch peaks and managed models inside the server (bench/e2e_comfy_probe.py)."""
    starts = [(t, e["data"]["node"]) for t, e in events if e.get("type") == "executing"
              and e.get("data", {}).get("prompt_id") == prompt_id]
    inside = {r["node"]: r for r in probe if r.get("prompt_id") == prompt_id}
    out = []
    for i, (t, node) in enumerate(starts):
        if node is None:
            continue
        t1 = starts[i + 1][0] if i + 1 < len(starts) else t_end
        rec = {"node": node, "class_type": prompt.get(str(node), {}).get("class_type"), "s": round(t1 - t, 3),
               "gpu_peak_gb": gpu.peak(t, t1)}
        rec.update({k: v for k, v in inside.get(node, {}).items() if k not in ("node", "prompt_id", "s")})
        out.append(rec)
    return out


def first_step_at(events: list, prompt_id: str, node: Optional[str]) -> Optional[float]:
    """perf_counter of the first progress message saying ``node`` finished a step (value >= 1): for SyncDreamer-T,
    the end of the first DDIM step. Reads both the classic ``progress`` and 0.30's ``progress_state`` messages."""
    for t, e in events:
        d = e.get("data", {}) or {}
        if d.get("prompt_id") not in (None, prompt_id):
            continue
        if e.get("type") == "progress" and str(d.get("node")) == str(node) and (d.get("value") or 0) >= 1:
            return t
        if e.get("type") == "progress_state":
            st = (d.get("nodes") or {}).get(str(node))
            if st and (st.get("value") or 0) >= 1:
                return t
    return None


def table(rec: Dict[str, Any]) -> str:
    """A run record as a readable table: the run's figures, then one line per node."""
    lines = [f"{rec.get('workflow')} run {rec.get('run')}: {rec.get('status')}, wall {rec.get('wall_s')} s, queue -> "
             f"first DDIM step {rec.get('queue_to_first_step_s')} s, device peak {rec.get('gpu_peak_gb')} GiB "
             f"(before {rec.get('gpu_before_gb')}), torch peak allocated {rec.get('torch_peak_alloc_gb')} GiB",
             f"  {'node':>4} {'class':28} {'s':>8} {'smi GiB':>8} {'alloc':>7} {'reserved':>8}  managed (GiB on device)"]
    for n in rec.get("nodes", []):
        lines.append(f"  {n['node']:>4} {n['class_type']!s:28} {n['s']:8.2f} {n.get('gpu_peak_gb')!s:>8} "
                     f"{n.get('torch_peak_alloc_gb')!s:>7} {n.get('torch_peak_reserved_gb')!s:>8}  "
                     f"{n.get('managed_models_gb')}")
    return "\n".join(lines)
