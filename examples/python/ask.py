"""A task that asks its submitter half-way: it imports orders one by one, and
when one looks wrong it asks "continue, skip or abort?" and does what the
answer says. Without an answer in time it aborts (the question's default).

Managed by taskwire serve (the config's [[workers]] entry runs this file), or
remote: TASKWIRE_URL=http://127.0.0.1:8080 TASKWIRE_WORKER_KEY=... python ask.py
"""

from __future__ import annotations

import asyncio
from typing import Any, NotRequired, TypedDict

import taskwire  # before anything that prints: a managed worker's stdout is the protocol

worker = taskwire.Worker("ask-demo", slots=4)


class Orders(TypedDict):
    orders: int
    #: The order that looks wrong (1-based); none by default.
    suspicious: NotRequired[int]
    #: Seconds to wait for an answer.
    timeout_s: NotRequired[float]


@worker.task("import_orders", input=Orders)
async def import_orders(input: Orders, ctx: taskwire.Context) -> dict[str, Any]:
    """Imports `orders` orders; asks what to do about the suspicious one."""
    imported: list[int] = []
    skipped: list[int] = []
    total = input["orders"]
    for n in range(1, total + 1):
        if n == input.get("suspicious"):
            answer = await ctx.ask(
                f"Order {n} has no price. Continue, skip it, or abort?",
                choices=[
                    ("continue", "Import it anyway"),
                    ("skip", "Skip it"),
                    ("abort", "Abort the import"),
                ],
                default="abort",
                timeout_s=input.get("timeout_s", 300),
            )
            ctx.log(f"order {n}: the answer was {answer}")
            if answer == "abort":
                return {"status": "aborted", "at": n, "imported": imported, "skipped": skipped}
            if answer == "skip":
                skipped.append(n)
                continue
        await asyncio.sleep(0.005)  # importing one order
        imported.append(n)
        ctx.progress(n / total, f"order {n} of {total}")
    return {"status": "done", "imported": imported, "skipped": skipped}


if __name__ == "__main__":
    worker.run()
