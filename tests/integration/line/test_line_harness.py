"""Self-checks of the LINE test harness against the simulator alone (no connector needed):
if these fail, the connector tests' verdicts cannot be trusted."""
import json
import os

import harness
from line_harness import (PUSH_PATH, http_request, new_user_id, raw_post, sign, utf16_units)

DATA = os.path.join(harness.REPO, "tests", "data", "line", "integration")


def vector():
    with open(os.path.join(DATA, "signature_vector.json")) as f:
        return json.load(f)


def test_signing_matches_official_vector():
    v = vector()
    assert sign(v["channel_secret"], v["body"]) == v["signature"]
    assert sign(v["channel_secret"], v["body"] + " ") != v["signature"]


def test_utf16_counting():
    assert utf16_units("a") == 1
    assert utf16_units("\U0001F600") == 2
    assert utf16_units("\u3042") == 1


def test_sim_push_faults_and_logs(line_sim):
    sim = line_sim
    sim.reset()
    token, bot, user = "tok-harness-" + new_user_id(), new_user_id(), new_user_id()
    sim.add_bot(token, bot)
    base = sim.base
    auth = {"Authorization": "Bearer " + token}
    st, _, body = http_request("GET", base + "/v2/bot/info", headers=auth)
    assert st == 200 and json.loads(body)["userId"] == bot

    key = "7f1d6a52-3c4b-4d3e-9a9b-0123456789ab"
    push = {"to": user, "messages": [{"type": "text", "text": "x"}]}
    sim.fault({"status": 500})
    st, _, _ = http_request("POST", base + PUSH_PATH, push, {**auth, "X-Line-Retry-Key": key})
    assert st == 500
    st, _, b1 = http_request("POST", base + PUSH_PATH, push, {**auth, "X-Line-Retry-Key": key})
    assert st == 200
    st, _, b2 = http_request("POST", base + PUSH_PATH, push, {**auth, "X-Line-Retry-Key": key})
    assert st == 409
    assert json.loads(b2)["sentMessages"] == json.loads(b1)["sentMessages"]
    reqs = sim.requests(PUSH_PATH)
    assert [r["status"] for r in reqs] == [500, 200, 409]
    # Positive control used by the leak test: the token is visible in the request log.
    assert all(r["headers"]["authorization"] == "Bearer " + token for r in reqs)
    assert len(sim.deliveries()) == 1
    sim.reset()
    assert sim.requests() == [] and sim.deliveries() == []


def test_sim_webhook_signing_agrees(line_sim):
    """The simulator's /__sim/webhook signs as we do (it POSTs to itself: 404 is fine)."""
    secret = "8c570fa6dd201bb328f1c1eac23a96d8"
    body = '{"destination":"U8e742f61d673b39c7fff3cecb7536ef0","events":[]}'
    r = line_sim.ctl("POST", "/__sim/webhook",
                     {"url": line_sim.base + "/nowhere", "channel_secret": secret, "body": body})
    assert r["signature"] == sign(secret, body) == "GhRKmvmHys4Pi8DxkF4+EayaH0OqtJtaZxgTD9fMDLs="


def test_raw_post_sees_early_413(line_sim):
    """raw_post gets the status of a server that answers before reading an oversize body."""
    big = b"x" * (9 * 1024 * 1024)
    st, _ = raw_post(line_sim.port, PUSH_PATH, big, {"Content-Type": "application/json"})
    assert st == 413
    st, _ = raw_post(line_sim.port, PUSH_PATH, big, {"Content-Type": "application/json"},
                     expect_continue=True)
    assert st == 413
