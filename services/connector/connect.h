/* The connect engine: Connector/ConnectChannel for every provider. */
#ifndef CONN_CONNECT_H
#define CONN_CONNECT_H

#include "conn.h"

/*
 * gRPC Connector/ConnectChannel; ctx->user is the conn_t. Validates the request, verifies the
 * token through provider->verify (the account id the provider reports must match a claimed
 * one), registers or updates the account of that type, seals token_field (and secret_field
 * when the secret is per account) with the vault, stores them (which moves an AUTH_FAILED
 * account back to ACTIVE) and answers the account as it is now, without its credentials, with
 * its webhook path. The plaintext credentials in the request are wiped on every path. Blocks.
 */
oc_err_t conn_connect_channel(oc_rpc_ctx_t *ctx, const ProtobufCMessage *req,
                              ProtobufCMessage **resp);

#endif
