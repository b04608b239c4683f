"""A module whose import fails: wharf must show this traceback and exit 3."""

1 / 0  # noqa: B018 (the point: it raises while importing)

app = None
