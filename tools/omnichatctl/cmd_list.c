/* omnichatctl's read-only commands on persistence: channels, conversations, timeline. */
#include <inttypes.h>
#include <langinfo.h>
#include <stdio.h>
#include <string.h>

#include "ctl.h"
#include "omnichat/buf.h"
#include "render.h"

#define CONV_PAGE_MAX 200
/* --thread scans pages until it finds the thread; this bounds a runaway scan. */
#define THREAD_SCAN_MAX_PAGES 5000

static const char *name_or(const char *s, const char *dflt)
{
    return (s != NULL && s[0] != '\0') ? s : dflt;
}

/* ---- channels --------------------------------------------------------------------------- */

int cmd_channels(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] = "omnichatctl channels [--channel line|facebook|instagram]";
    const char *channel = NULL, *tenant = NULL, *pos[1];
    size_t npos;
    ctl_opt_t opts[] = {{"channel", &channel, NULL}};
    PB(ListChannelAccountsRequest) req = PB_INIT(LIST_CHANNEL_ACCOUNTS_REQUEST);
    PB(ListChannelAccountsResponse) *resp = NULL;
    PB(ChannelType) type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_UNSPECIFIED);
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 1, pos, 0, &npos, usage)) != 0) return rc;
    if ((rc = ctl_need_tenant(ctl, &tenant)) != 0) return rc;
    if ((rc = ctl_channel_opt(ctl, channel, &type)) != 0) return rc;
    req.tenant_id = (char *)tenant;
    req.channel_type = type;
    rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "ListChannelAccounts", &req.base,
                  &omnichat__persistence__v1__list_channel_accounts_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    if (rc != 0) return rc;

    if (ctl->json) {
        json_t *root = json_object(), *list = json_array();
        for (size_t i = 0; list != NULL && i < resp->n_channel_accounts; i++)
            json_array_append_new(list, rnd_json_account(ctl->arena, resp->channel_accounts[i]));
        json_object_set_new(root, "channel_accounts", list);
        return ctl_print_json(root);
    }
    if (resp->n_channel_accounts == 0) {
        printf("no channel accounts for tenant %s\n", tenant);
        return CTL_EXIT_OK;
    }
    printf("%-36s  %-8s  %-34s  %-11s  %-22s  %s\n", "ACCOUNT", "CHANNEL", "EXTERNAL ID", "STATUS",
           "LAST ERROR", "NAME");
    for (size_t i = 0; i < resp->n_channel_accounts; i++) {
        const PB(ChannelAccount) *a = resp->channel_accounts[i];
        /* Deliberately nothing from a->credentials: not even the sealed bytes. */
        printf("%-36s  %-8s  %s  %-11s  %-22s  %s\n", a->channel_account_id,
               rnd_channel(ctl->arena, a->channel_type),
               rnd_cell(ctl->arena, a->external_account_id, 34, 34),
               rnd_channel_status(ctl->arena, a->status),
               name_or(rnd_error_category(ctl->arena, a->last_error_category), "-"),
               rnd_cell(ctl->arena, a->display_name, 60, 0));
    }
    return CTL_EXIT_OK;
}

/* ---- conversations ---------------------------------------------------------------------- */

static void print_conversation_row(ctl_t *ctl, const PB(Conversation) * c)
{
    char when[32];

    printf("%-36s  %-8s  %s  %-19s  %5" PRId64 "  %s\n", c->conversation_id,
           rnd_channel(ctl->arena, c->channel_type), rnd_cell(ctl->arena, c->thread_key, 34, 34),
           rnd_time(c->last_activity_at_ms, when, sizeof when), c->message_count,
           rnd_cell(ctl->arena, c->last_message_preview, 60, 0));
}

static void print_conversation_header(void)
{
    printf("%-36s  %-8s  %-34s  %-19s  %5s  %s\n", "CONVERSATION", "CHANNEL", "THREAD",
           "LAST ACTIVITY", "MSGS", "PREVIEW");
}

int cmd_conversations(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] =
        "omnichatctl conversations [--channel line|facebook|instagram] [--account ID] "
        "[--thread KEY] [--limit N] [--page-token T]";
    const char *channel = NULL, *account = NULL, *thread = NULL, *limit_s = NULL, *token = NULL,
               *tenant = NULL, *pos[1];
    size_t npos, shown = 0;
    long limit = 0;
    ctl_opt_t opts[] = {{"channel", &channel, NULL},
                        {"account", &account, NULL},
                        {"thread", &thread, NULL},
                        {"limit", &limit_s, NULL},
                        {"page-token", &token, NULL}};
    PB(ListConversationsRequest) req = PB_INIT(LIST_CONVERSATIONS_REQUEST);
    PB(ListConversationsResponse) *resp = NULL;
    PB(ChannelType) type = PBE(CHANNEL_TYPE__CHANNEL_TYPE_UNSPECIFIED);
    json_t *root = NULL, *list = NULL;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 5, pos, 0, &npos, usage)) != 0) return rc;
    if ((rc = ctl_need_tenant(ctl, &tenant)) != 0) return rc;
    if ((rc = ctl_channel_opt(ctl, channel, &type)) != 0) return rc;
    if ((rc = ctl_int_opt(ctl, "--limit", limit_s, 1, CONV_PAGE_MAX, &limit)) != 0) return rc;
    if (thread != NULL && thread[0] == '\0')
        return ctl_usage_error(ctl, "--thread: must not be empty");

    req.tenant_id = (char *)tenant;
    req.channel_type = type;
    req.channel_account_id = (char *)(account != NULL ? account : "");
    req.page_token = (char *)(token != NULL ? token : "");
    /* A --thread search reads whole pages and filters here (the API has no such filter). */
    req.page_size = thread != NULL ? CONV_PAGE_MAX : (int32_t)limit;

    if (ctl->json) {
        root = json_object();
        list = json_array();
        if (root == NULL || list == NULL) {
            json_decref(root);
            json_decref(list);
            return ctl_fail(ctl, "out of memory");
        }
        json_object_set_new(root, "conversations", list);
    }
    for (int page = 0;; page++) {
        rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "ListConversations", &req.base,
                      &omnichat__persistence__v1__list_conversations_response__descriptor,
                      (ProtobufCMessage **)&resp, NULL);
        if (rc != 0) {
            json_decref(root);
            return rc;
        }
        for (size_t i = 0; i < resp->n_conversations; i++) {
            const PB(Conversation) *c = resp->conversations[i];
            if (thread != NULL && strcmp(c->thread_key, thread) != 0) continue;
            if (list != NULL)
                json_array_append_new(list, rnd_json_conversation(ctl->arena, c));
            else {
                if (shown == 0) print_conversation_header();
                print_conversation_row(ctl, c);
            }
            shown++;
        }
        if (thread == NULL || resp->next_page_token[0] == '\0' ||
            (limit > 0 && shown >= (size_t)limit))
            break;
        if (page + 1 >= THREAD_SCAN_MAX_PAGES) {
            json_decref(root);
            return ctl_fail(ctl,
                            "--thread: gave up after %d pages; narrow the search with "
                            "--account or --channel",
                            THREAD_SCAN_MAX_PAGES);
        }
        req.page_token = resp->next_page_token;
    }

    if (root != NULL) {
        json_object_set_new(root, "next_page_token",
                            json_string(thread == NULL ? resp->next_page_token : ""));
        return ctl_print_json(root);
    }
    if (shown == 0)
        printf(thread != NULL ? "no conversation with that thread\n" : "no conversations\n");
    if (thread == NULL && resp->next_page_token[0] != '\0') {
        printf("\nmore: omnichatctl conversations");
        if (channel) printf(" --channel %s", channel);
        if (account) printf(" --account %s", account);
        if (limit_s) printf(" --limit %ld", limit);
        printf(" --page-token %s\n", resp->next_page_token);
    }
    return CTL_EXIT_OK;
}

/* ---- timeline --------------------------------------------------------------------------- */

static bool utf8_terminal(void)
{
    const char *cs = nl_langinfo(CODESET);
    return cs != NULL && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
}

static void print_message(ctl_t *ctl, const PB(Message) * m, bool utf8)
{
    char when[32];
    bool out = m->direction == PBE(DIRECTION__DIRECTION_OUTBOUND);
    const char *arrow = out ? (utf8 ? "\xE2\x86\x92" : "->") : (utf8 ? "\xE2\x86\x90" : "<-");
    const char *name = m->sender_display_name[0] ? m->sender_display_name : m->sender_id;
    oc_buf_t b;

    oc_buf_init(&b, 1 << 20);
    oc_buf_appendf(&b, "%s  %s  ", rnd_time(m->channel_timestamp_ms, when, sizeof when), arrow);
    rnd_clean(&b, name_or(name, "?"), 40, " ");
    oc_buf_appendf(&b, " (%s)", rnd_sender_type(ctl->arena, m->sender_type));
    if (out || m->status != PBE(MESSAGE_STATUS__MESSAGE_STATUS_RECEIVED)) {
        const char *cat = rnd_error_category(ctl->arena, m->error_category);
        oc_buf_appendf(&b, " [%s%s%s", rnd_message_status(ctl->arena, m->status),
                       cat[0] ? ": " : "", cat);
        if (m->attempts > 1) oc_buf_appendf(&b, ", %d attempts", (int)m->attempts);
        oc_buf_appends(&b, "]");
    }
    oc_buf_appends(&b, "  ");
    if (m->content_type != PBE(CONTENT_TYPE__CONTENT_TYPE_TEXT)) {
        oc_buf_appendf(&b, "[%s]", rnd_content_type(ctl->arena, m->content_type));
        if (m->content_text[0]) oc_buf_appends(&b, " ");
    }
    rnd_clean(&b, m->content_text, 0, "\n      ");
    if (m->n_attachments > 0)
        oc_buf_appendf(&b, " (+%zu attachment%s)", m->n_attachments,
                       m->n_attachments == 1 ? "" : "s");
    if (b.failed == OC_OK) printf("%s\n", b.data);
    oc_buf_dispose(&b);
}

int cmd_timeline(ctl_t *ctl, int argc, char **argv)
{
    static const char usage[] = "omnichatctl timeline CONVERSATION_ID [--limit N] "
                                "[--before CURSOR | --after CURSOR | --oldest]";
    const char *limit_s = NULL, *before = NULL, *after = NULL, *tenant = NULL, *pos[1];
    bool oldest = false;
    size_t npos;
    long limit = 0;
    ctl_opt_t opts[] = {{"limit", &limit_s, NULL},
                        {"before", &before, NULL},
                        {"after", &after, NULL},
                        {"oldest", NULL, &oldest}};
    PB(GetConversationRequest) greq = PB_INIT(GET_CONVERSATION_REQUEST);
    PB(GetConversationResponse) *gresp = NULL;
    PB(ListMessagesRequest) req = PB_INIT(LIST_MESSAGES_REQUEST);
    PB(ListMessagesResponse) *resp = NULL;
    const PB(Conversation) * conv;
    int rc;

    if ((rc = ctl_parse(ctl, argc, argv, opts, 4, pos, 1, &npos, usage)) != 0) return rc;
    if (npos != 1) {
        ctl_usage_error(ctl, "which conversation? give its id");
        fprintf(stderr, "usage: %s\n", usage);
        return CTL_EXIT_USAGE;
    }
    if ((rc = ctl_need_tenant(ctl, &tenant)) != 0) return rc;
    if ((rc = ctl_int_opt(ctl, "--limit", limit_s, 1, 200, &limit)) != 0) return rc;
    if ((before != NULL) + (after != NULL) + oldest > 1)
        return ctl_usage_error(ctl, "give at most one of --before, --after and --oldest");

    greq.tenant_id = (char *)tenant;
    greq.conversation_id = (char *)pos[0];
    rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "GetConversation", &greq.base,
                  &omnichat__persistence__v1__get_conversation_response__descriptor,
                  (ProtobufCMessage **)&gresp, NULL);
    if (rc != 0) return rc;
    conv = gresp->conversation;

    req.tenant_id = (char *)tenant;
    req.conversation_id = (char *)pos[0];
    req.page_size = (int32_t)limit;
    req.before = (char *)(before != NULL ? before : "");
    req.after = (char *)(after != NULL ? after : "");
    req.from_oldest = oldest;
    rc = ctl_call(ctl, ctl->persistence, CTL_PERSISTENCE "ListMessages", &req.base,
                  &omnichat__persistence__v1__list_messages_response__descriptor,
                  (ProtobufCMessage **)&resp, NULL);
    if (rc != 0) return rc;

    if (ctl->json) {
        json_t *root = json_object(), *list = json_array();
        if (root == NULL || list == NULL) {
            json_decref(root);
            json_decref(list);
            return ctl_fail(ctl, "out of memory");
        }
        if (conv != NULL)
            json_object_set_new(root, "conversation", rnd_json_conversation(ctl->arena, conv));
        for (size_t i = 0; i < resp->n_messages; i++)
            json_array_append_new(list, rnd_json_message(ctl->arena, resp->messages[i]));
        json_object_set_new(root, "messages", list);
        json_object_set_new(root, "before_cursor", json_string(resp->before_cursor));
        json_object_set_new(root, "after_cursor", json_string(resp->after_cursor));
        json_object_set_new(root, "has_older", json_boolean(resp->has_older));
        json_object_set_new(root, "has_newer", json_boolean(resp->has_newer));
        return ctl_print_json(root);
    }

    if (conv != NULL)
        printf("conversation %s  %s  thread %s  %" PRId64 " message%s\n\n", conv->conversation_id,
               rnd_channel(ctl->arena, conv->channel_type),
               rnd_cell(ctl->arena, conv->thread_key, 80, 0), conv->message_count,
               conv->message_count == 1 ? "" : "s");
    if (resp->n_messages == 0) printf("(no messages on this page)\n");
    bool utf8 = utf8_terminal();
    for (size_t i = 0; i < resp->n_messages; i++)
        print_message(ctl, resp->messages[i], utf8);
    printf("\n");
    if (resp->has_older && resp->before_cursor[0])
        printf("older: omnichatctl timeline %s --before %s\n", pos[0], resp->before_cursor);
    else
        printf("older: none (this page starts the conversation)\n");
    if (resp->after_cursor[0])
        printf("newer: omnichatctl timeline %s --after %s%s\n", pos[0], resp->after_cursor,
               resp->has_newer ? "" : "   (none yet; run it again to catch up)");
    return CTL_EXIT_OK;
}
