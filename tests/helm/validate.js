// Validates rendered Kubernetes manifests against the API schemas of kubernetes-models
// (Kubernetes core and apps, batch, policy, autoscaling, networking) and of its CRD packages
// (cert-manager, Prometheus Operator).
//
// Usage: node validate.js MANIFESTS.json    (a JSON array of {"source": ..., "doc": {...}})
// Prints "ok <apiVersion> <kind> <name>" or "FAIL <apiVersion> <kind> <name>: <reasons>" per
// manifest and exits 1 when any failed or a kind has no schema.
//
// The generated validators check types, required fields, enums and formats, but accept fields
// they do not know (the schemas allow additional properties). A misspelt field
// (`readinesProbe`, `grpc.prot`) would pass, so validation runs on a proxy that records which
// properties the validator looked at: a property it never read is not in the schema, and is
// reported as unknown. Maps (labels, annotations) are enumerated by the validator, so their
// keys count as read.
"use strict";
const fs = require("fs");

const PACKAGES = {
    "cert-manager.io/v1": "@kubernetes-models/cert-manager/cert-manager.io/v1",
    "monitoring.coreos.com/v1": "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1",
};

function modelOf(apiVersion, kind) {
    const path = PACKAGES[apiVersion] || `kubernetes-models/${apiVersion}`;
    let mod;
    try {
        mod = require(path);
    } catch (e) {
        return null;
    }
    return mod[kind] || null;
}

// Wraps value so that every property read (or key enumeration) is recorded per object.
function tracker() {
    const seen = [];
    const proxies = new WeakMap();
    const own = (o, k) => Object.prototype.hasOwnProperty.call(o, k);
    function track(value, path) {
        if (value === null || typeof value !== "object") return value;
        if (proxies.has(value)) return proxies.get(value);
        const known = new Set();
        seen.push({ path, value, known });
        const p = new Proxy(value, {
            get(t, k) {
                if (typeof k !== "string") return t[k];
                known.add(k);
                return own(t, k) ? track(t[k], `${path}/${k}`) : t[k];
            },
            has(t, k) {
                if (typeof k === "string") known.add(k);
                return k in t;
            },
            ownKeys(t) {
                for (const k of Object.keys(t)) known.add(k);
                return Reflect.ownKeys(t);
            },
        });
        proxies.set(value, p);
        return p;
    }
    const unknown = () => {
        const out = [];
        for (const s of seen)
            for (const k of Object.keys(s.value))
                if (!s.known.has(k)) out.push(`${s.path}/${k}: unknown field`);
        return out;
    };
    return { track, unknown };
}

function validate(doc) {
    const Model = modelOf(doc.apiVersion, doc.kind);
    if (Model === null) return [`no schema for ${doc.apiVersion} ${doc.kind}`];
    const model = new Model(doc);
    const t = tracker();
    const problems = [];
    try {
        // The model's data, copied, validated through the tracking proxy.
        Model.prototype.validate.call(t.track(JSON.parse(JSON.stringify(model)), ""));
    } catch (e) {
        const details = Array.isArray(e.errors)
            ? e.errors.map((x) => `${x.instancePath || "/"} ${x.message}`)
            : [String(e.message || e)];
        problems.push(...details);
    }
    problems.push(...t.unknown());
    return problems;
}

function main() {
    const file = process.argv[2];
    if (!file) {
        console.error("usage: node validate.js MANIFESTS.json");
        process.exit(2);
    }
    const items = JSON.parse(fs.readFileSync(file, "utf8"));
    let failed = 0;
    for (const { source, doc } of items) {
        const name = `${doc.apiVersion} ${doc.kind} ${doc.metadata && doc.metadata.name}`;
        const problems = validate(doc);
        if (problems.length === 0) {
            console.log(`ok ${name}`);
        } else {
            failed++;
            console.log(`FAIL ${name} (${source}): ${problems.join("; ")}`);
        }
    }
    console.log(`${items.length - failed} valid, ${failed} invalid`);
    process.exit(failed === 0 && items.length > 0 ? 0 : 1);
}

main();
