// Lists a running service's services and calls one RPC using nothing but server reflection,
// through the npm packages grpc-reflection-js (v1alpha) and @grpc/grpc-js. Optional: not in
// the test suite (it needs the npm registry); see docs/api.md, "Reflection".
//
//   npm install --prefix tools/reflection-js
//   node tools/reflection-js/check.js 127.0.0.1:50051
//   node tools/reflection-js/check.js localhost:50051 var/certs/ca.crt \
//        var/certs/omnichatctl.crt var/certs/omnichatctl.key
//
// Persistence: ListConversations for a random tenant must succeed (an empty page). A connector:
// SendText for a random conversation must be NOT_FOUND (the engine decoded the request and
// looked it up). Exits 0 when both checks pass.
'use strict';
const fs = require('fs');
const crypto = require('crypto');
const grpc = require('@grpc/grpc-js');
const { Client } = require('grpc-reflection-js');

const PERSISTENCE = 'omnichat.persistence.v1.Persistence';
const CONNECTOR = 'omnichat.connector.v1.Connector';

async function main() {
  const [target, ca, cert, key] = process.argv.slice(2);
  if (!target) throw new Error('usage: check.js HOST:PORT [CA CERT KEY]');
  const creds = ca
    ? grpc.credentials.createSsl(fs.readFileSync(ca), fs.readFileSync(key), fs.readFileSync(cert))
    : grpc.credentials.createInsecure();
  const reflection = new Client(target, creds);
  const services = await reflection.listServices();
  console.log('services:', services.join(', '));
  const service = services.includes(PERSISTENCE) ? PERSISTENCE : CONNECTOR;
  if (!services.includes(service)) throw new Error('no Omnichat service listed');

  const root = await reflection.fileContainingSymbol(service);
  root.resolveAll();
  const svc = root.lookupService(service);
  const [method, request, want] = service === PERSISTENCE
    ? ['ListConversations', { tenant_id: crypto.randomUUID(), page_size: 1 }, grpc.status.OK]
    : ['SendText', { tenant_id: crypto.randomUUID(), conversation_id: crypto.randomUUID(),
                     text: 'hello', idempotency_key: 'check-' + crypto.randomUUID(),
                     sender_id: 'agent-1' }, grpc.status.NOT_FOUND];
  const m = svc.methods[method];
  const Req = m.resolvedRequestType, Resp = m.resolvedResponseType;
  // The field names as the reflected descriptors spell them (protobufjs may camelCase them).
  for (const [k, v] of Object.entries(request)) {
    const camel = k.replace(/_([a-z])/g, (_, c) => c.toUpperCase());
    if (!Req.fields[k] && Req.fields[camel]) { delete request[k]; request[camel] = v; }
    if (!Req.fields[k] && !Req.fields[camel]) throw new Error(`${method}: no field ${k}`);
  }
  const client = new grpc.Client(target, creds);
  const code = await new Promise((resolve) => {
    client.makeUnaryRequest(`/${service}/${method}`,
      (o) => Buffer.from(Req.encode(Req.fromObject(o)).finish()), (b) => Resp.decode(b), request,
      { deadline: Date.now() + 10000 }, (err, resp) => {
        if (!err) console.log(`${method}:`, JSON.stringify(Resp.toObject(resp)));
        else console.log(`${method}: ${grpc.status[err.code]} ${err.details}`);
        resolve(err ? err.code : grpc.status.OK);
      });
  });
  client.close();
  if (code !== want) throw new Error(`${method}: status ${grpc.status[code]}, want ${grpc.status[want]}`);
  console.log('reflection check passed');
}

main().then(() => process.exit(0), (e) => { console.error('FAILED:', e.message); process.exit(1); });
