from __future__ import annotations

from fetchml.client.base import DomainClient, parse, parse_list
from fetchml.core.models import CreateExperimentRequest, Experiment


class ExperimentsClient(DomainClient):
    def list(self, *, limit: int = 100, offset: int = 0) -> list[Experiment]:
        resp = self._t.request("GET", "/v1/experiments", params={"limit": limit, "offset": offset})
        return parse_list(resp, Experiment)

    def create(self, name: str, description: str | None = None, commit_id: str | None = None) -> Experiment:
        body = CreateExperimentRequest(name=name, description=description, commit_id=commit_id)
        resp = self._t.request("POST", "/v1/experiments", json=body.model_dump(exclude_none=True))
        return parse(resp, Experiment)
