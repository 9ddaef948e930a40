"""A local stand-in for an OpenAI-compatible LLM server, with faults a test can inject.

Speaks the real protocol over real HTTP (``POST /v1/chat/completions``, ``GET
/v1/models``) on 127.0.0.1 and a random port, in a background thread, so the openai
SDK and curator's client run unmodified against it. Good replies are captions built
from the triplet the prompt names, in the language it asks for.

It behaves like the servers teams point curator at first:

- ``slots``: how many requests it serves at once (llama.cpp ``--parallel``, Ollama's
  ``OLLAMA_NUM_PARALLEL``); the rest wait in its queue, and the wait counts in the
  client's latency, as it does on a real server. A request the client abandons keeps
  its slot until its reply is written (llama.cpp and Ollama finish the generation).
- ``delay`` + ``seconds_per_token`` x completion tokens: the service time of one
  reply, varied by ``jitter`` (a seeded fraction either way).
- ``max_queue``: more requests waiting than this get 429 with ``Retry-After``
  (vLLM behind a gateway, OpenAI's rate limits).
- ``json_schema=False``: a ``json_schema`` response_format is refused with 400, as
  servers without structured output do; ``json_object`` is always taken.
- ``models``: the model list ``GET /v1/models`` answers (the served model first).

Faults are queued with :meth:`FakeLLM.inject` and consumed by the next matching requests:

- ``429`` / ``500``: that status, with ``Retry-After`` when given
- ``timeout``: sleep past the client's timeout, then answer
- ``malformed``: content that is not JSON
- ``count``: ``missing`` fewer captions than asked
- ``contradiction``: one caption names another imaging modality
- ``wrong_language``: English captions for a Chinese request and vice versa
- ``length``: ``finish_reason=length`` and the JSON cut off
- ``meta``: one caption is meta-text ("Here are 5 captions ...")
- ``prose``: a paragraph describing the image, no JSON
- ``fence``: the JSON inside a Markdown code fence (parsed: not a fault to the client)
- ``refusal``: "I'm sorry, but I can't help with that."

The instruct passes' and the audit's prompts (a ``- task:`` line: rewrite,
region-description, translate, audit) get one JSON object back, built from the
prompt's fields: a rewrite that keeps every ``keep`` item, a region description that
names the finding, a Chinese "translation" keeping the numbers, a score (5 when the
text names a label, 2 when it does not). The faults above apply to them too (``malformed``,
``length``, ``prose``, ``refusal``, ``timeout``, ``429``/``500``), plus:

- ``wrong_language``: the text back untranslated (rewrite: in the other language)
- ``drop_keep``: a rewrite that leaves out what it had to keep
- ``score_range``: a score of 9
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FINDING = re.compile(r"^- finding: (?P<label>.+?)(?: \((?:\w| )+ term: (?P<hint>.+)\))?$", re.M)
ANATOMY = re.compile(r"^- anatomy: (.+)$", re.M)
MODALITY = re.compile(r"^- modality: (.+)$", re.M)
ASKED = re.compile(r"Write (\d+) (?:distinct |more )?captions")
TASK = re.compile(r"^- task: (.+)$", re.M)
FIELD = re.compile(r"^- ([a-z ]+): (.*)$", re.M)
NUMBERS = re.compile(r"\d+")

ZH_ANATOMY = {
    "chest": "胸部",
    "abdomen": "腹部",
    "brain": "脑部",
    "head": "头部",
    "knee": "膝关节",
    "lung": "肺部",
    "whole body": "全身",
    "unspecified": "相应部位",
}
ZH_MODALITY = {
    "X-ray": "X线片",
    "CT": "CT",
    "MRI": "MRI",
    "ultrasound": "超声",
    "PET": "PET",
    "nuclear medicine": "核素显像",
}
EN_FORMS = [
    "{M} of the {a} showing {l}.",
    "{L} on {m} of the {a}.",
    "{M} image of the {a} demonstrating {l}.",
    "Findings of {l} on this {m} of the {a}.",
    "{A} {m}: appearance consistent with {l}.",
    "{L} is seen on {m} of the {a}; no other abnormality is described.",
    "Representative {m} of the {a} with features of {l}.",
    "{M} examination of the {a} notable for {l}.",
]
EN_UNLABELLED = ["{M} image of the {a}.", "{A} {m}.", "{M} examination of the {a}.", "{M} study covering the {a}."]
ZH_FORMS = [
    "{a}{m}显示{l}。",
    "{a}{m}图像，可见{l}。",
    "{m}示{a}{l}。",
    "{a}{m}检查，提示{l}。",
    "{a}{m}，表现符合{l}。",
]
# a good model words a normal study as one, never "evidence of no finding"
NORMAL = {"no finding", "normal", "no diabetic retinopathy"}
EN_NORMAL = [
    "Normal {m} of the {a}.",
    "{A} {m} without acute abnormality.",
    "Unremarkable {m} of the {a}.",
    "{M} of the {a}: no abnormality is seen.",
    "{A} {m} within normal limits.",
]
ZH_NORMAL = [
    "{a}{m}未见明显异常。",
    "{a}{m}检查结果正常。",
    "{m}示{a}未见异常。",
    "正常{a}{m}表现。",
    "{a}{m}：无明显异常。",
]
ZH_UNLABELLED = ["{a}{m}图像。", "{a}{m}检查。", "{m}检查，部位：{a}。", "{a}{m}影像资料。"]
EN_VARIANTS = ["", " Frontal projection.", " Single view.", " Standard technique.", " Good image quality."]
ZH_VARIANTS = ["", "单一视图。", "常规技术。", "图像质量良好。", "标准体位。"]


@dataclass
class Fault:
    kind: str
    times: int
    when: Callable[[dict], bool] | None
    opts: dict


class FakeLLM:
    """The server; use as a context manager. ``requests`` holds every chat request received."""

    def __init__(
        self,
        model: str = "mock-medical-1",
        api_key: str | None = None,
        delay: float = 0.0,
        *,
        slots: int | None = None,
        seconds_per_token: float = 0.0,
        jitter: float = 0.0,
        max_queue: int | None = None,
        retry_after: str = "1",
        json_schema: bool = True,
        models: list[str] | None = None,
        seed: int = 0,
    ):
        self.model = model
        self.api_key = api_key
        self.delay = delay
        self.seconds_per_token = seconds_per_token
        self.jitter = jitter
        self.max_queue = max_queue
        self.retry_after = retry_after
        self.json_schema = json_schema
        self.models = models or [model]
        self.requests: list[dict] = []
        self.model_listings = 0
        self.in_flight = self.max_in_flight = 0
        self.slots = slots
        self.queued = self.max_queued = self.busy = 0
        self.abandoned = 0  # replies finished after the client had gone
        self._slots = threading.Semaphore(slots) if slots else None
        self._rng = random.Random(seed)
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    @property
    def calls(self) -> int:
        return len(self.requests)

    def __enter__(self) -> FakeLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def inject(self, kind: str, times: int = 1, when: Callable[[dict], bool] | None = None, **opts) -> None:
        with self._lock:
            self._faults.append(Fault(kind, times, when, opts))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _take_fault(self, info: dict) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.times > 0 and (fault.when is None or fault.when(info)):
                    fault.times -= 1
                    return fault
        return None

    # -- replies -------------------------------------------------------------
    def captions(self, info: dict, k: int, offset: int) -> list[str]:
        zh = info["language"] == "zh"
        if zh:
            a = ZH_ANATOMY.get(info["anatomy"], "")
            m = ZH_MODALITY.get(info["modality"], "影像")
            label = info["hint"] or (info["label"] or "")
            forms, variants = (ZH_FORMS if info["label"] else ZH_UNLABELLED), ZH_VARIANTS
            forms = ZH_NORMAL if info["label"] in NORMAL else forms
        else:
            a, m = info["anatomy"], info["modality"]
            parts = [p.strip() for p in (info["label"] or "").split(",")]
            label = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
            forms, variants = (EN_FORMS if info["label"] else EN_UNLABELLED), EN_VARIANTS
            forms = EN_NORMAL if info["label"] in NORMAL else forms
        out = []
        for i in range(offset, offset + k):
            form = forms[i % len(forms)]
            text = form.format(
                M=m[:1].upper() + m[1:], m=m, A=a[:1].upper() + a[1:], a=a, L=label.capitalize(), l=label
            )
            out.append(text + variants[(i // len(forms)) % len(variants)])
        return out


def _value(raw: str):
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def structured(info: dict, kind: str | None) -> str:
    """The JSON reply to an instruct pass or audit prompt (see the module docstring)."""
    f = info["fields"]
    zh = "Chinese" in f.get("language", "")
    task = info["task"]
    if task == "rewrite":
        answer = str(f.get("answer", "")).rstrip(".。")
        if kind == "drop_keep":
            text = "这是答案。" if zh else "That is the answer."
        elif kind == "wrong_language":
            text = f"{answer}, as the image shows." if zh else f"{answer}，如图所示。"
        else:
            text = f"{answer}，如图所示。" if zh else f"{answer}, as the image shows."
        return json.dumps({"answer": text}, ensure_ascii=False)
    if task == "region-description":
        term, m, a = f.get("term", ""), f.get("modality", ""), f.get("anatomy", "")
        en = f"The marked region of this {m} of the {a} shows {term}."
        text = f"该{m}图像中标注区域可见{term}，位于{a}。" if zh else en
        return json.dumps({"description": text}, ensure_ascii=False)
    if task == "translate":
        source = str(f.get("text", ""))
        if kind == "wrong_language":
            return json.dumps({"translation": source}, ensure_ascii=False)
        numbers = " ".join(NUMBERS.findall(source))
        return json.dumps({"translation": f"这是医学图像文本的中文译文{numbers}。"}, ensure_ascii=False)
    if task == "audit":
        text = str(f.get("text", "")).lower()
        labels = [x.strip() for x in str(f.get("labels", "")).split(",") if x.strip() and x.strip() != "none"]
        named = not labels or any(x.lower() in text for x in labels)
        score = 9 if kind == "score_range" else 5 if named else 2
        reason = "names the labelled finding" if named else "does not name the labelled finding"
        return json.dumps({"score": score, "reason": reason})
    return json.dumps({"error": f"unknown task {task}"})


def _parse(body: dict) -> dict:
    messages = body.get("messages", [])
    first = next((m["content"] for m in messages if m["role"] == "user"), "")
    last = [m["content"] for m in messages if m["role"] == "user"][-1] if messages else ""
    task = TASK.search(first)
    if task:
        fields = {m.group(1): _value(m.group(2)) for m in FIELD.finditer(first)}
        reask = sum(1 for m in messages if m["role"] == "assistant")
        return {"task": task.group(1).strip(), "fields": fields, "language": "zh" if "Chinese" in first else "en",
                "label": fields.get("finding"), "anatomy": fields.get("anatomy", ""),
                "modality": fields.get("modality", ""), "asked": 1, "reask": reask, "hint": None}  # fmt: skip
    finding = FINDING.search(first)
    label = finding.group("label") if finding else None
    asked = ASKED.search(last)
    return {
        "label": None
        if label in (None, "not given (do not state or imply any finding, normal or abnormal)")
        else label,
        "hint": finding.group("hint") if finding else None,
        "anatomy": (ANATOMY.search(first) or [None, ""])[1],
        "modality": (MODALITY.search(first) or [None, ""])[1],
        "language": "zh" if "Chinese" in first else "en",
        "asked": int(asked.group(1)) if asked else 1,
        "reask": sum(1 for m in messages if m["role"] == "assistant"),
    }


def _handler(server: FakeLLM):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _send(self, status: int, payload: dict | str, headers: dict | None = None) -> bool:
            data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                return False  # the client gave up (timeout): nothing to answer
            return True

        def _authorised(self) -> bool:
            if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                self._send(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                return False
            return True

        def do_GET(self) -> None:
            if self.path.rstrip("/") != "/v1/models" or not self._authorised():
                if self.path.rstrip("/") != "/v1/models":
                    self._send(404, {"error": {"message": "not found"}})
                return
            with server._lock:
                server.model_listings += 1
            data = [{"id": m, "object": "model", "created": 0, "owned_by": "test"} for m in server.models]
            self._send(200, {"object": "list", "data": data})

        def do_POST(self) -> None:
            with server._lock:
                server.in_flight += 1
                server.max_in_flight = max(server.max_in_flight, server.in_flight)
            try:
                self._chat()
            finally:
                with server._lock:
                    server.in_flight -= 1

        def _chat(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": "not found"}})
                return
            info = _parse(body)
            record = {"body": body, "info": info, "time": time.monotonic(), "auth": self.headers.get("Authorization")}
            with server._lock:
                server.requests.append(record)
            if not self._authorised():
                return
            if body.get("model") != server.model:
                self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist"}})
                return
            fmt = (body.get("response_format") or {}).get("type")
            record["format"] = fmt
            if fmt == "json_schema" and not server.json_schema:
                message = "'response_format' of type 'json_schema' is not supported by this server"
                self._send(400, {"error": {"message": message, "type": "invalid_request_error"}})
                return
            with server._lock:
                waiting_or_served = server.queued + server.busy
                if (
                    server.max_queue is not None
                    and server._slots
                    and waiting_or_served >= server.slots + server.max_queue
                ):
                    full = True
                else:
                    full = False
                    server.queued += 1
                    server.max_queued = max(server.max_queued, server.queued)
            if full:
                headers = {"Retry-After": server.retry_after}
                self._send(429, {"error": {"message": "queue full", "type": "rate_limit_error"}}, headers)
                return
            fault = server._take_fault(info)
            kind = record["fault"] = fault.kind if fault else None
            if kind in ("429", "500"):
                with server._lock:
                    server.queued -= 1
                headers = {"Retry-After": fault.opts["retry_after"]} if "retry_after" in fault.opts else {}
                self._send(int(kind), {"error": {"message": f"injected {kind}", "type": "server_error"}}, headers)
                return
            k = info["asked"]
            offset = 20 * info["reask"]
            caps = [] if info.get("task") else server.captions(info, k, offset)
            finish = "stop"
            if info.get("task"):
                pass  # an instruct pass or audit prompt: structured() below applies its faults
            elif kind == "count":
                caps = caps[: max(0, k - fault.opts.get("missing", 2))]
            elif kind == "contradiction":
                other = "MRI" if info["modality"] != "MRI" else "CT"
                caps[0] = caps[0].replace(info["modality"], other) if info["language"] == "en" else f"{other}显示病变。"
                if other not in caps[0]:
                    caps[0] = f"{other} {caps[0]}"
            elif kind == "wrong_language":
                flipped = {**info, "language": "en" if info["language"] == "zh" else "zh"}
                caps = server.captions(flipped, k, offset)
            elif kind == "meta":
                caps[0] = f"Here are {k} captions for the image."
            content = json.dumps({"captions": caps}, ensure_ascii=False)
            if info.get("task"):
                content = structured(info, kind)
            if kind == "malformed":
                content = "Sure! captions: " + content.replace('"', "'")[:-3]
            elif kind == "length":
                content, finish = content[: len(content) // 2], "length"
            elif kind == "prose":
                content = f"This image is a {info['modality']} of the {info['anatomy']}. " + " ".join(caps)
            elif kind == "fence":
                content = f"```json\n{content}\n```"
            elif kind == "refusal":
                content = "I'm sorry, but I can't help with that."
            completion_tokens = max(1, len(content) // 4)
            service = server.delay + server.seconds_per_token * completion_tokens
            with server._lock:
                service *= 1 + server.jitter * (2 * server._rng.random() - 1)
            if server._slots:
                server._slots.acquire()
            with server._lock:
                server.queued -= 1
                server.busy += 1
            try:
                record["started"] = time.monotonic()
                time.sleep(service + (fault.opts.get("seconds", 2.0) if kind == "timeout" else 0.0))
            finally:
                with server._lock:
                    server.busy -= 1
                if server._slots:
                    server._slots.release()
            prompt_tokens = sum(len(m.get("content", "")) for m in body.get("messages", [])) // 4
            sent = self._send(
                200,
                {
                    "id": f"chatcmpl-{len(server.requests)}",
                    "object": "chat.completion",
                    "created": 0,
                    "model": server.model,
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                },
            )
            if not sent:
                with server._lock:
                    server.abandoned += 1

    return Handler
