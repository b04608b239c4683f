"""A real Flask application served by wharf in test_frameworks.py (`flask_app:app`)."""

from __future__ import annotations

import hashlib
import os
import time

from flask import Flask, Response, jsonify, redirect, request, stream_with_context, url_for

# The streaming view waits for the test to create a file between its chunks; this bounds the
# wait so a failed test cannot pin a server thread forever.
RELEASE_WAIT_SECONDS = 30.0

app = Flask(__name__)


def wait_for_file(path: str) -> bool:
    deadline = time.monotonic() + RELEASE_WAIT_SECONDS
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@app.get("/search")
def search():
    return jsonify(q=request.args.get("q"), tags=request.args.getlist("tag"), page=request.args.get("page", type=int))


@app.post("/form")
def form():
    return jsonify(fields={key: request.form.getlist(key) for key in request.form}, content_type=request.mimetype)


@app.post("/upload")
def upload():
    upload = request.files["upload"]
    data = upload.read()
    return jsonify(
        filename=upload.filename,
        mimetype=upload.mimetype,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        note=request.form.get("note"),
    )


@app.post("/json")
def json_api():
    payload = request.get_json()
    return jsonify(total=sum(payload["numbers"]), name=payload["name"].upper(), echo=payload), 201


@app.get("/stream")
def stream():
    @stream_with_context
    def generate():
        # request is only reachable here because of stream_with_context.
        yield f"first chunk for {request.args['who']}\n"
        if not wait_for_file(request.args["release"]):
            yield "gave up waiting\n"
            return
        for i in range(3):
            yield f"chunk {i}\n"

    return Response(generate(), mimetype="text/plain")


@app.post("/raw")
def raw_body():
    # get_data() on a body without Content-Length works only when the server sets
    # wsgi.input_terminated, which tells Werkzeug the stream ends by itself.
    data = request.get_data()
    return jsonify(
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_length=request.headers.get("Content-Length"),
        transfer_encoding=request.headers.get("Transfer-Encoding"),
    )


@app.get("/login")
def login():
    response = redirect(url_for("me"))
    response.set_cookie("user", request.args["user"], httponly=True, samesite="Lax")
    return response


@app.get("/me")
def me():
    return jsonify(user=request.cookies.get("user"))


@app.get("/boom")
def boom():
    raise RuntimeError("boom from flask")
