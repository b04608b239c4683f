"""Writes to wsgi.errors the ways apps and frameworks do (PATH_INFO picks which)."""

import logging

from flask import Flask


def app(environ, start_response):
    errors = environ["wsgi.errors"]
    path = environ["PATH_INFO"]
    if path == "/print":
        print("a", "b", 42, file=errors)
    elif path == "/partial":
        errors.write("a line without its newline")
    elif path == "/lines":
        errors.writelines(["first\nsec", "ond\n", "\n"])
    elif path == "/flushed":
        errors.write("flushed ")
        errors.write("line")
        errors.flush()
    elif path.startswith("/flask"):
        return flask_app(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


flask_app = Flask(__name__)
flask_app.logger.setLevel(logging.INFO)


@flask_app.route("/flask")
def flask_view():
    flask_app.logger.info("hello from the flask logger")
    return "ok"
