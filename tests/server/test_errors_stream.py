"""wsgi.errors is the app's log stream: one record per line, at --errors-log-level (WARN by
default), with the request's method and path."""

from __future__ import annotations

import re

import pytest
import requests

from conftest import wait_for


def records(server, text: str) -> list[str]:
    return [line for line in server.log().splitlines() if text in line]


@pytest.fixture
def server(wharf):
    return wharf("errors_app:app")


def test_print_with_several_arguments_is_one_warn_record(server):
    assert requests.get(server.url + "/print?token=s3cret", timeout=10).text == "ok"
    wait_for(lambda: records(server, "a b 42"))
    (line,) = records(server, "a b 42")
    assert " WARN " in line and "ERROR" not in line
    assert re.search(r'method="?GET', line) and re.search(r'path="?/print', line) and "s3cret" not in line
    assert not [line for line in server.log().splitlines() if line.rstrip().endswith(" 42")]


def test_an_unfinished_line_is_logged_when_the_request_ends(server):
    requests.get(server.url + "/partial", timeout=10)
    wait_for(lambda: records(server, "a line without its newline"))


def test_lines_split_across_writes_are_joined_and_blank_lines_dropped(server):
    requests.get(server.url + "/lines", timeout=10)
    wait_for(lambda: records(server, "second"))
    assert len(records(server, "first")) == 1 and len(records(server, "second")) == 1


def test_flush_ends_a_line(server):
    requests.get(server.url + "/flushed", timeout=10)
    wait_for(lambda: records(server, "flushed line"))


def test_a_flask_logger_info_record_is_not_an_error(server):
    requests.get(server.url + "/flask", timeout=10)
    wait_for(lambda: records(server, "hello from the flask logger"))
    (line,) = records(server, "hello from the flask logger")
    assert " WARN " in line and "ERROR" not in line


def test_the_level_is_configurable(wharf):
    server = wharf("errors_app:app", "--errors-log-level", "error")
    requests.get(server.url + "/print", timeout=10)
    wait_for(lambda: records(server, "a b 42"))
    assert " ERROR " in records(server, "a b 42")[0]
