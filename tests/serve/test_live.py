"""The service under uvicorn on loopback: clients that disconnect mid-body or mid-inference cost nothing
lasting; the server keeps serving, and the worker slot of an abandoned request is given back."""

import socket
import time

import httpx
from serving import files, live_server, noise, png

from aird.serve import ServeSettings, create_app


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_clients_that_disconnect_mid_request(tmp_path, serve_recognizer):
    app = create_app(ServeSettings(data_dir=tmp_path, workers=1, queue=1), serve_recognizer)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        host, port = url.removeprefix("http://").split(":")
        crop = {"data": {"cropped": "true", "stream": "gone"}, "files": files("images", png(noise(16)))}

        # 1. Promises 100 kB, sends a few bytes, hangs up.
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                b"POST /v1/represent HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=b\r\n\r\n--b\r\n"
            )
        assert client.get("/healthz").json()["in_flight"] == 0

        # 2. Sends a whole request and hangs up before the answer: the work is finished and its slot freed.
        request = client.build_request("POST", "/v1/represent", **crop)
        head = f"POST /v1/represent HTTP/1.1\r\nHost: {host}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() != "host"
        )
        with socket.create_connection((host, int(port))) as s:
            s.sendall(head.encode() + b"\r\n" + request.read())
        assert wait_for(lambda: client.get("/v1/streams/gone").json()["faces"] == 1)
        assert wait_for(lambda: client.get("/healthz").json()["in_flight"] == 0)

        # The server still answers, and the abandoned requests left nothing behind.
        r = client.post("/v1/represent", **crop)
        assert r.status_code == 200 and r.json()["stream"]["faces"] == 2
        assert client.get("/healthz").json()["in_flight"] == 0
