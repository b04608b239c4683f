-- wrk script for the body app: every request POSTs a 16 KiB body.
wrk.method = "POST"
wrk.body = string.rep("a", 16384)
wrk.headers["Content-Type"] = "application/octet-stream"
