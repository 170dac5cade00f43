"""Capacity reservations (admin keys)."""

from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list
from fetchml.core.models import CreateReservationRequest, Reservation


class ReservationClient(DomainClient):
    def create(self, req: CreateReservationRequest) -> Reservation:
        resp = self._t.request(
            "POST", "/v1/scheduler/reservations", json=req.model_dump(mode="json", exclude_none=True)
        )
        return parse(resp, Reservation)

    def list(self, *, include_expired: bool = False) -> list[Reservation]:
        params = {"all": "true"} if include_expired else None
        return parse_list(self._t.request("GET", "/v1/scheduler/reservations", params=params), Reservation)
