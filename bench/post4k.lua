-- POST 4 KiB to the echo app; the server reads it with wsgi.input.read(n) and sends it back.
wrk.method = "POST"
wrk.body = string.rep("x", 4096)
wrk.headers["Content-Type"] = "application/octet-stream"
