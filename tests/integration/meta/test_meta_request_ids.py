"""Request ids (Meta): a webhook POST with X-Request-Id is followed through the connector's and
persistence's logs, and the reply carries the id; without one a UUIDv4 is generated."""
import os
import sys
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "line"))
from meta_harness import body_bytes, entry, new_psid, payload, sign, text_event  # noqa: E402
from request_ids import UUID4, assert_followed, mark  # noqa: E402


def _post(fb, rid=None):
    raw = body_bytes(payload(fb.object, entry(fb.external_id,
                                              text_event(new_psid(), fb.external_id, "follow"))))
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": sign(fb.conn.app_secret, raw)}
    if rid is not None:
        headers["X-Request-Id"] = rid
    status, hdrs, _ = fb.conn.http("POST", "/webhooks/meta", raw, headers)
    return status, hdrs.get("x-request-id", "")


def test_meta_webhook_request_id_followed_across_services(fb, service):
    rid = "it-meta-" + uuid.uuid4().hex
    c0, p0 = mark(fb.conn), mark(service)
    status, got = _post(fb, rid)
    assert (status, got) == (200, rid)
    assert_followed(rid, fb.tenant, fb.conn, c0, service, p0,
                    {"msg": "http", "status": 200}, {"msg": "rpc", "method": "PersistInbound"})


def test_meta_webhook_generated_id(fb, service):
    c0, p0 = mark(fb.conn), mark(service)
    status, rid = _post(fb)
    assert status == 200 and UUID4.match(rid), (status, rid)
    assert_followed(rid, fb.tenant, fb.conn, c0, service, p0,
                    {"msg": "http", "status": 200}, {"msg": "rpc", "method": "PersistInbound"})
