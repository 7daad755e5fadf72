"""omnichatctl with the Meta connector: connect facebook and instagram with the token from a
file, simulate meta-webhook (signed as Meta does), send through the connector of the channel
type."""
import harness
from meta_harness import FACEBOOK, INSTAGRAM, MetaChannel, new_psid
from test_omnichatctl import ctl, fails, ok, secret_file

pb = harness.pb


def test_connect_simulate_and_send(mconn, graph_sim, api, db, service, tmp_path):
    ch = MetaChannel(mconn, graph_sim, api, db, FACEBOOK, connect=False)
    g = ["--persistence", f"127.0.0.1:{service.grpc_port}",
         "--meta-connector", f"127.0.0.1:{mconn.grpc_port}", "--connector", "127.0.0.1:1"]
    tok = secret_file(tmp_path, "page.token", ch.token)
    fails(ctl(*g, "connect", "facebook", "--token-file", tok, tenant=ch.tenant), 2,
          "--account-id")
    r = ok(ctl(*g, "--json", "connect", "facebook", "--token-file", tok, "--account-id",
               ch.page_id, tenant=ch.tenant)).json()
    acc = r["channel_account"]
    assert acc["external_account_id"] == ch.page_id and acc["channel_type"] == "facebook", r
    r = ok(ctl(*g, "--json", "connect", "instagram", "--token-file", tok, "--account-id",
               ch.ig_id, tenant=ch.tenant)).json()
    assert r["channel_account"]["channel_type"] == "instagram", r
    assert ch.token not in str(r)

    app = secret_file(tmp_path, "app.secret", mconn.app_secret)
    psid = new_psid()
    url = f"http://127.0.0.1:{mconn.http_port}"
    ok(ctl(*g, "simulate", "meta-webhook", "--account-id", ch.page_id, "--app-secret-file", app,
           "--user", psid, "--text", "héllo from the CLI", "--url", url))
    wrong = secret_file(tmp_path, "wrong.secret", "not-the-app-secret")
    fails(ctl(*g, "simulate", "meta-webhook", "--account-id", ch.page_id, "--app-secret-file",
              wrong, "--user", psid, "--text", "x", "--url", url), 1, "401")
    ok(ctl(*g, "simulate", "meta-webhook", "--instagram", "--account-id", ch.ig_id,
           "--app-secret-file", app, "--user", psid, "--text", "from instagram", "--url", url))
    convs = {c.thread_key: c for c in api.ListConversations(tenant_id=ch.tenant,
                                                            page_size=50).conversations}
    fb_conv = convs[f"{ch.page_id}:{psid}"]
    assert convs[f"{ch.ig_id}:{psid}"].channel_type == INSTAGRAM
    # send picks the Meta connector by the conversation's channel type (--connector is dead).
    r = ok(ctl(*g, "--json", "send", fb_conv.conversation_id, "--text", "reply from the CLI",
               tenant=ch.tenant)).json()
    assert r["message"]["status"] == "sent", r
