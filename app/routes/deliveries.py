"""The outbox as the LIS interface's operator sees it: GET /deliveries (an API key or a
reviewer), POST /deliveries/{id}/retry (the admin key)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as FastAPIPath
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from app import outbox
from app.actors import Actor, database, machine_or_person
from app.records import Delivery
from app.security import require_admin_key
from app.specimens import NotFound

router = APIRouter(prefix="/deliveries", tags=["lis delivery"])
MachineOrPerson = Depends(machine_or_person)
DeliveryId = Annotated[int, FastAPIPath(ge=1, le=2_147_483_647)]


@router.get("", responses={401: {"description": "no API key or session"}})
async def list_deliveries(
    request: Request,
    status: str | None = Query(None, pattern="^(pending|delivered|failed)$"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=1_000_000_000),
    actor: Actor = MachineOrPerson,
) -> dict[str, Any]:
    """Report messages to the LIS, newest first: destination, status, attempts, last error."""
    db = database(request)

    def work() -> dict[str, Any]:
        with db.session() as session:
            query = select(Delivery)
            if status:
                query = query.where(Delivery.status == status)
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = session.scalars(query.order_by(Delivery.id.desc()).limit(limit).offset(offset))
            return {"total": total, "deliveries": [outbox.as_json(d) for d in rows]}

    return await run_in_threadpool(work)


@router.post(
    "/{delivery_id}/retry",
    dependencies=[Depends(require_admin_key)],
    responses={401: {"description": "no admin key"}, 404: {"description": "no such message"}},
)
async def retry_delivery(delivery_id: DeliveryId, request: Request) -> dict[str, Any]:
    """Send a failed (or pending) message again, from its first try, same control id."""
    db = database(request)

    def work() -> dict[str, Any]:
        with db.session() as session:
            d = outbox.retry(session, delivery_id)
            if d is None:
                raise NotFound(f"no delivery {delivery_id}")
            return outbox.as_json(d)

    return await run_in_threadpool(work)
