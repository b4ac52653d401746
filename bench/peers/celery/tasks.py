"""The Celery peer's app: a Redis broker and result backend, one no-op task.

Everything else is Celery's default, as a user would start with it.
The broker URL comes from CELERY_REDIS_URL (bench/peers/celery.sh sets it).
"""
import os

from celery import Celery

url = os.environ.get("CELERY_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("tasks", broker=url, backend=url)


@app.task
def noop():
    return None
