"""The stack's one-shot migration: creates the visits table (idempotent)
and exits 0. With --fail it connects, then exits 3, as a broken migration
would, so that what waits for it must not start.
"""

import os
import sys
import time

import psycopg2

deadline = time.monotonic() + 30
while True:
    try:
        conn = psycopg2.connect(
            host=os.environ.get("DB_HOST", "db"),
            user=os.environ.get("DB_USER", "postgres"),
            password=os.environ["DB_PASSWORD"],
            dbname=os.environ.get("DB_NAME", "postgres"),
            connect_timeout=5,
        )
        break
    except psycopg2.OperationalError as e:
        if time.monotonic() > deadline:
            raise
        print(f"waiting for the database: {e}".strip(), flush=True)
        time.sleep(1)

if "--fail" in sys.argv:
    print("migration failed on purpose", flush=True)
    sys.exit(3)
with conn, conn.cursor() as cur:
    cur.execute(
        "CREATE TABLE IF NOT EXISTS visits"
        " (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())"
    )
conn.close()
print("migrated", flush=True)
