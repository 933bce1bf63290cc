"""GET /health in process."""

from __future__ import annotations

from tests.api.helpers import Env, MakeEnv, Recorder


async def test_health_without_supervisor(env: Env) -> None:
    resp = await env.client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["transport"] == "outbox"
    assert set(body["processes"]) == {"api"}
    assert body["processes"]["api"]["alive"] is True


async def test_health_reports_processes(make_env: MakeEnv) -> None:
    recorder = Recorder(processes={
        "api": {"pid": 10, "alive": True, "restarts": 0},
        "scheduler": {"pid": 11, "alive": True, "restarts": 2},
        "sender": {"pid": 12, "alive": True, "restarts": 0},
    })
    env = await make_env(recorder, email_transport="ses")
    resp = await env.client.get("/health")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "transport": "ses",
                                 "processes": recorder.processes}

    assert recorder.processes is not None
    recorder.processes["sender"] = {"pid": 0, "alive": False, "restarts": 3}
    resp = await env.client.get("/health")
    assert resp.status == 503
    body = await resp.json()
    assert body["status"] == "degraded"
    assert body["processes"]["sender"] == {"pid": 0, "alive": False, "restarts": 3}
