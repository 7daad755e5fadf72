"""gRPC server reflection (grpc.reflection.v1 and v1alpha) on persistence and both connectors.

A third-party client built only from the reflection proto lists each service's services, fetches
the descriptors of a service with their dependencies, builds message classes from them (no
omnichat .proto anywhere on the client side) and calls a real RPC with those classes. Under
OMNICHAT_TEST_TLS=1 every service runs mutual TLS and the client presents a certificate.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import grpc
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "line"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "meta"))

from harness import RPC_TIMEOUT, assert_clean_exit, free_port  # noqa: E402
from line_harness import Connector  # noqa: E402
from meta_harness import MetaConnector  # noqa: E402

REFLECTION_DIR = "/usr/share/grpc-proto/grpc/reflection"
VERSIONS = ("v1", "v1alpha")
PERSISTENCE = "omnichat.persistence.v1.Persistence"
CONNECTOR = "omnichat.connector.v1.Connector"
BUILTIN = {"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
           "grpc.reflection.v1alpha.ServerReflection"}


def _reflection_modules():
    """reflection_v1_pb2 and reflection_v1alpha_pb2, generated like harness.py's health_pb2.
    The files are renamed so that both fit in Python's default descriptor pool (each would be
    "reflection.proto" otherwise)."""
    gen = tempfile.mkdtemp(prefix="omnichat-it-reflection-")
    mods = {}
    for v in VERSIONS:
        shutil.copy(os.path.join(REFLECTION_DIR, v, "reflection.proto"),
                    os.path.join(gen, f"reflection_{v}.proto"))
        subprocess.run(["protoc", f"--python_out={gen}", "-I", gen, f"reflection_{v}.proto"],
                       check=True)
    sys.path.insert(0, gen)
    for v in VERSIONS:
        mods[v] = __import__(f"reflection_{v}_pb2")
    return mods


PB = _reflection_modules()


def reflect(channel, version, requests):
    """Sends `requests` (ServerReflectionRequest field dicts) on one stream; the responses."""
    m = PB[version]
    call = channel.stream_stream(
        f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=m.ServerReflectionRequest.SerializeToString,
        response_deserializer=m.ServerReflectionResponse.FromString)
    return list(call(iter([m.ServerReflectionRequest(**r) for r in requests]),
                     timeout=RPC_TIMEOUT))


def services_of(channel, version):
    (resp,) = reflect(channel, version, [{"list_services": ""}])
    assert resp.WhichOneof("message_response") == "list_services_response", resp
    return {s.name for s in resp.list_services_response.service}


def pool_for(channel, version, symbol):
    """A descriptor pool holding `symbol`'s file and everything it imports, all from the server."""
    (resp,) = reflect(channel, version, [{"file_containing_symbol": symbol}])
    assert resp.WhichOneof("message_response") == "file_descriptor_response", resp
    files = [descriptor_pb2.FileDescriptorProto.FromString(b)
             for b in resp.file_descriptor_response.file_descriptor_proto]
    pool, added = descriptor_pool.DescriptorPool(), set()
    # Dependencies first: a pool refuses a file whose imports it does not know.
    while len(added) < len(files):
        ready = [f for f in files if f.name not in added and set(f.dependency) <= added]
        assert ready, f"the server left out a dependency: {[f.name for f in files]}"
        for f in ready:
            pool.Add(f)
            added.add(f.name)
    return pool, files


def reflected_call(channel, version, service, method, **fields):
    """Calls service/method with request and response classes built from reflection alone."""
    pool, _ = pool_for(channel, version, service)
    factory = message_factory.MessageFactory(pool)
    md = pool.FindServiceByName(service).FindMethodByName(method)
    req_cls = factory.GetPrototype(md.input_type)
    resp_cls = factory.GetPrototype(md.output_type)
    mc = channel.unary_unary(f"/{service}/{method}",
                             request_serializer=req_cls.SerializeToString,
                             response_deserializer=resp_cls.FromString)
    return mc(req_cls(**fields), timeout=RPC_TIMEOUT)


# ---- persistence ----


@pytest.mark.parametrize("version", VERSIONS)
def test_persistence_lists_exactly_what_it_serves(service, version):
    assert services_of(service.channel, version) == {PERSISTENCE} | BUILTIN


@pytest.mark.parametrize("version", VERSIONS)
def test_persistence_rpc_called_with_reflected_descriptors_only(service, b, version):
    acct = b.account()
    ext = "U" + uuid.uuid4().hex
    first = reflected_call(service.channel, version, PERSISTENCE, "UpsertContact",
                           tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                           external_user_id=ext, display_name="Reflected")
    again = reflected_call(service.channel, version, PERSISTENCE, "UpsertContact",
                           tenant_id=b.tenant, channel_account_id=acct.channel_account_id,
                           external_user_id=ext)
    # The server decoded every field of the reflected request, and the client every field of
    # the reflected response: the same contact, created once, with the name it was given.
    assert first.created and not again.created
    assert first.contact.contact_id == again.contact.contact_id
    assert again.contact.display_name == "Reflected"
    assert again.contact.external_user_id == ext


@pytest.mark.parametrize("version", VERSIONS)
def test_files_come_with_their_dependencies_and_by_name(service, version):
    _, files = pool_for(service.channel, version, "grpc.health.v1.Health")
    assert files[0].name == "grpc/health/v1/health.proto"
    (resp,) = reflect(service.channel, version,
                      [{"file_by_filename": "omnichat/persistence/v1/persistence.proto"}])
    names = [descriptor_pb2.FileDescriptorProto.FromString(b).name
             for b in resp.file_descriptor_response.file_descriptor_proto]
    assert names[0] == "omnichat/persistence/v1/persistence.proto"
    assert len(names) == len(set(names))


@pytest.mark.parametrize("version", VERSIONS)
def test_symbols_of_every_kind_are_found(service, version):
    symbols = [PERSISTENCE, PERSISTENCE + ".UpsertContact",
               "omnichat.persistence.v1.UpsertContactRequest",
               "grpc.health.v1.HealthCheckResponse.ServingStatus",  # a nested enum
               "grpc.reflection.v1alpha.ServerReflectionRequest"]
    resps = reflect(service.channel, version, [{"file_containing_symbol": s} for s in symbols])
    assert [r.WhichOneof("message_response") for r in resps] == \
        ["file_descriptor_response"] * len(symbols)


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_requests_get_error_responses_on_a_stream_that_goes_on(service, version):
    resps = reflect(service.channel, version, [
        {"file_containing_symbol": "no.such.Symbol"},
        {"file_by_filename": "no/such/file.proto"},
        {"file_containing_extension": {"containing_type": PERSISTENCE[:-12] + "Contact",
                                       "extension_number": 100}},
        {"all_extension_numbers_of_type": "no.such.Type"},
        {"all_extension_numbers_of_type": "omnichat.persistence.v1.Contact"},
        {"file_containing_symbol": "x" * 2000},  # over the 1024-byte name cap
        {"list_services": ""},  # still answered after all of the above
    ])
    kinds = [r.WhichOneof("message_response") for r in resps]
    assert kinds == ["error_response"] * 4 + ["all_extension_numbers_response",
                                              "error_response", "list_services_response"]
    codes = [r.error_response.error_code for r in resps[:4]]
    assert codes == [grpc.StatusCode.NOT_FOUND.value[0]] * 4
    assert "no.such.Symbol" in resps[0].error_response.error_message
    ext = resps[4].all_extension_numbers_response
    assert ext.base_type_name == "omnichat.persistence.v1.Contact"
    assert list(ext.extension_number) == []
    # Each response echoes its request, as clients match them up by it.
    assert resps[0].original_request.file_containing_symbol == "no.such.Symbol"


def test_a_stream_is_bounded(service):
    # 1024 requests are answered; the next ends the stream with RESOURCE_EXHAUSTED.
    with pytest.raises(grpc.RpcError) as e:
        reflect(service.channel, "v1", [{"list_services": ""}] * 1025)
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e.value
    assert len(reflect(service.channel, "v1", [{"list_services": ""}] * 1024)) == 1024


# ---- connectors ----


@pytest.fixture(scope="module")
def connectors(service):
    """A LINE and a Meta connector on the suite's persistence. No provider is called: their
    API base points at a closed port."""
    started = []
    try:
        line = Connector(service.grpc_port, free_port(), name="reflect-line").start()
        started.append(("reflect-line", line))
        meta = MetaConnector(service.grpc_port, free_port(), "reflect-secret", "reflect-token",
                             name="reflect-meta").start()
        started.append(("reflect-meta", meta))
        yield {"line": line, "meta": meta}
    finally:
        for label, c in started:
            assert_clean_exit(c, label, c.stop())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("which", ("line", "meta"))
def test_connector_reflection_and_reflected_call(connectors, version, which):
    conn = connectors[which]
    assert services_of(conn.channel, version) == {CONNECTOR} | BUILTIN
    # A real SendText, built from reflected descriptors: the engine decodes it and answers
    # from its own validation and lookup (no such conversation in this tenant).
    with pytest.raises(grpc.RpcError) as e:
        reflected_call(conn.channel, version, CONNECTOR, "SendText",
                       tenant_id=str(uuid.uuid4()), conversation_id=str(uuid.uuid4()),
                       text="hello", idempotency_key="reflect-" + uuid.uuid4().hex,
                       sender_id="agent-1", sender_display_name="Agent")
    assert e.value.code() == grpc.StatusCode.NOT_FOUND, e.value
