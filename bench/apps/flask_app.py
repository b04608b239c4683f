"""A one-route Flask app returning JSON: the framework's per-request cost dominates."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def index():
    return {"message": "Hello, World!", "id": 42, "ok": True, "items": [1, 2, 3]}
