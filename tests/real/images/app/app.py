"""The test stack's application: counts visits in PostgreSQL and hits in Redis.

GET /        records a visit and answers JSON: the visit count (from the
             table the migration job creates), the Redis hit counter, the
             user it runs as and APP_VERSION
GET /health  200 as soon as the server answers

It runs as nobody and finds its database and cache by name (DB_HOST,
REDIS_HOST), connecting anew for each request, so it rides out a database
restart.
"""

import json
import os
import pwd
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import redis


def database():
    return psycopg2.connect(
        host=os.environ.get("DB_HOST", "db"),
        user=os.environ.get("DB_USER", "postgres"),
        password=os.environ["DB_PASSWORD"],
        dbname=os.environ.get("DB_NAME", "postgres"),
        connect_timeout=5,
    )


def visit():
    conn = database()
    try:
        with conn, conn.cursor() as cur:
            cur.execute("INSERT INTO visits DEFAULT VALUES")
            cur.execute("SELECT count(*) FROM visits")
            visits = cur.fetchone()[0]
    finally:
        conn.close()
    cache = redis.Redis(host=os.environ.get("REDIS_HOST", "cache"), socket_timeout=5)
    return {
        "visits": visits,
        "hits": cache.incr("hits"),
        "user": pwd.getpwuid(os.getuid()).pw_name,
        "version": os.environ.get("APP_VERSION", ""),
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        if self.path != "/":
            return self.reply(404, {"error": "not found"})
        try:
            body = visit()
        except Exception as e:  # the test reads the reason
            return self.reply(500, {"error": f"{type(e).__name__}: {e}".strip()})
        self.reply(200, body)

    def reply(self, code, body):
        data = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


if __name__ == "__main__":
    # As PID 1 the app gets no default action for SIGTERM: stop on it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = int(os.environ.get("PORT", "8000"))
    print(f"app listening on :{port} as {pwd.getpwuid(os.getuid()).pw_name}", flush=True)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
