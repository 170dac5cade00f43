from tests.harness import ServerHandle


def test_health_and_submit(shared_server: ServerHandle, keys) -> None:
    with shared_server.http() as http:
        r = http.get("/health")
        assert r.status_code == 200 and r.json()["status"] == "healthy"
    with shared_server.http(keys.user) as http:
        r = http.post("/v1/tasks", json={"job_name": "smoke", "entrypoint": "train.py"})
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == "alice"
