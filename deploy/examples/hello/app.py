"""A minimal Flask application served by wharf (see README.md in this folder)."""

import os

from flask import Flask, jsonify

app = Flask(__name__)
# Baked in at image build time (Dockerfile ARG), so a rolling update is visible in the responses.
VERSION = os.environ.get("HELLO_VERSION", "dev")


@app.get("/")
def hello():
    return f"Hello from wharf! version={VERSION}\n"


@app.get("/info")
def info():
    return jsonify(version=VERSION, hostname=os.environ.get("HOSTNAME", ""))
