from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.params import Parameter

from fetchml.core.models import MAX_INT32, CreateExperimentRequest, Experiment
from fetchml.server.context import client_ip, principal_of, services_of
from fetchml.server.security import USERS


class ExperimentController(Controller):
    path = "/v1/experiments"
    opt = USERS
    tags = ["Experiments"]

    @get("/", summary="List experiments, newest first")
    async def list_experiments(
        self,
        request: Request[Any, Any, Any],
        limit: Annotated[int, Parameter(ge=1, le=1000)] = 100,
        offset: Annotated[int, Parameter(ge=0, le=MAX_INT32)] = 0,
    ) -> list[Experiment]:
        return await services_of(request).experiments.list(limit=limit, offset=offset)

    @post("/", summary="Create an experiment", opt={"errors": (409,)})
    async def create_experiment(
        self, request: Request[Any, Any, Any], data: CreateExperimentRequest
    ) -> Experiment:
        return await services_of(request).experiments.create(principal_of(request), data, client_ip(request))
