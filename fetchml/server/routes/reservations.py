"""Capacity reservations (admin keys)."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post

from fetchml.core.models import CreateReservationRequest, Reservation
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import ADMIN_ONLY


class ReservationController(Controller):
    path = "/v1/scheduler/reservations"
    tags = ["Scheduler"]
    opt = ADMIN_ONLY

    @get(
        "/",
        summary="List active reservations",
        description="Active and claimed reservations that have not expired; `all=true` adds expired ones.",
    )
    async def list_reservations(
        self, request: Request[Any, Any, Any], all: bool = False
    ) -> list[Reservation]:
        return await services_of(request).reservations.list(include_expired=all)

    @post(
        "/",
        opt={"errors": (409,)},
        summary="Create reservation",
        description=(
            "Holds `gpu_count` free GPUs on each of `node_count` distinct active workers (of "
            "`gpu_type` when given) for `expires_minutes`. 409 CONFLICT when that much is not free now."
        ),
    )
    async def create_reservation(
        self, request: Request[Any, Any, Any], data: CreateReservationRequest
    ) -> Reservation:
        return await services_of(request).reservations.create(principal_of(request), data, client_ip(request))
