"""Request ids (LINE): a webhook's X-Request-Id and a SendText's x-request-id metadata can each
be followed through the connector's and persistence's logs; replies carry the id (the webhook's
X-Request-Id header, gRPC trailing metadata, errors included); without one, or with an unusable
one, a UUIDv4 is generated and followed the same way."""
import json
import uuid

import grpc

from line_harness import cpb, new_user_id, payload, sign, text_event
from request_ids import UUID4, assert_followed, mark

SEND_TEXT = "/omnichat.connector.v1.Connector/SendText"


def _post(line, rid=None, raw_rid=None):
    body = json.dumps(payload(line.bot_user_id, text_event(new_user_id(), "follow me")),
                      separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "x-line-signature": sign(line.secret, body)}
    if rid is not None:
        headers["X-Request-Id"] = rid
    status, hdrs, _ = line.conn.http("POST", f"/webhooks/line/{line.account_id}", body, headers)
    return status, {k.lower(): v for k, v in dict(hdrs).items()}


def _send(line, conv, rid=None):
    mc = line.conn.channel.unary_unary(SEND_TEXT,
                                       request_serializer=cpb.SendTextRequest.SerializeToString,
                                       response_deserializer=cpb.SendTextResponse.FromString)
    md = [("x-request-id", rid)] if rid is not None else None
    return mc.with_call(line.send_request(conv), timeout=15, metadata=md)


def test_webhook_request_id_followed_across_services(line, service):
    rid = "it-webhook-" + uuid.uuid4().hex
    c0, p0 = mark(line.conn), mark(service)
    status, hdrs = _post(line, rid)
    assert status == 200 and hdrs.get("x-request-id") == rid, (status, hdrs)
    assert_followed(rid, line.tenant, line.conn, c0, service, p0,
                    {"msg": "http", "status": 200}, {"msg": "rpc", "method": "PersistInbound"})


def test_webhook_id_at_the_limit_is_kept(line, service):
    rid = ("it edge {}!~" + uuid.uuid4().hex + "x" * 63)[:63]  # printable, spaces and all
    status, hdrs = _post(line, rid)
    assert status == 200 and hdrs.get("x-request-id") == rid, (status, hdrs)


def test_webhook_without_or_with_a_bad_id_gets_a_generated_uuid(line, service):
    # "\u00c3\u00a9" goes out (latin-1) as the bytes C3 A9: valid UTF-8 for "e-acute", but not
    # ASCII, so it is refused all the same; 64 bytes is one too many.
    for sent in (None, "bad\u00c3\u00a9id", "x" * 64):
        c0, p0 = mark(line.conn), mark(service)
        status, hdrs = _post(line, sent)
        rid = hdrs.get("x-request-id", "")
        assert status == 200 and UUID4.match(rid), (sent, status, hdrs)
        assert_followed(rid, line.tenant, line.conn, c0, service, p0,
                        {"msg": "http", "status": 200}, {"msg": "rpc", "method": "PersistInbound"})


def test_send_text_request_id_followed_across_services(line, service):
    conv, _ = line.conversation()
    rid = "it-send-" + uuid.uuid4().hex
    c0, p0 = mark(line.conn), mark(service)
    _, call = _send(line, conv, rid)
    assert dict(call.trailing_metadata()).get("x-request-id") == rid
    assert_followed(rid, line.tenant, line.conn, c0, service, p0,
                    {"msg": "rpc", "method": "SendText", "code": "OK"},
                    {"msg": "rpc", "method": "CreateOutbound"})


def test_send_text_generated_id_is_a_uuid_in_both_logs(line, service):
    conv, _ = line.conversation()
    c0, p0 = mark(line.conn), mark(service)
    _, call = _send(line, conv)
    rid = dict(call.trailing_metadata()).get("x-request-id", "")
    assert UUID4.match(rid), rid
    assert_followed(rid, line.tenant, line.conn, c0, service, p0,
                    {"msg": "rpc", "method": "SendText", "code": "OK"},
                    {"msg": "rpc", "method": "CreateOutbound"})


def test_error_replies_carry_the_request_id(line, service):
    rid = "it-error-" + uuid.uuid4().hex
    c0, p0 = mark(line.conn), mark(service)
    try:
        _send(line, str(uuid.uuid4()), rid)  # no such conversation
        raise AssertionError("SendText to an unknown conversation succeeded")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        assert dict(e.trailing_metadata()).get("x-request-id") == rid
    assert_followed(rid, line.tenant, line.conn, c0, service, p0,
                    {"msg": "rpc", "method": "SendText", "code": "NOT_FOUND"},
                    {"msg": "rpc", "code": "NOT_FOUND"})
    # A webhook error reply (bad signature) names its id too.
    status, hdrs, _ = line.conn.http("POST", f"/webhooks/line/{line.account_id}", b"{}",
                                     {"x-line-signature": "bad", "X-Request-Id": rid})
    assert status == 401 and {k.lower(): v for k, v in dict(hdrs).items()}.get(
        "x-request-id") == rid
