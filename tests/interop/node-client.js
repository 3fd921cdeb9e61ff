#!/usr/bin/env node
// Real LwM2M 1.0 client (Telefonica lwm2m-node-lib) for the gateway's interop tests.
//
// Usage:
//   node node-client.js --host 127.0.0.1 --port <serverPort> --ep <endpoint> --lifetime <s> [--timeout <s>] [--verbose]
//
// stdout protocol (one event per line, nothing else is ever written to stdout):
//   REGISTERED <location>          once, after a 2.xx answer to Register (location = Location-Path joined by '/', e.g. "rd/1")
//   READ <path>                    the library served a Read of a single resource, e.g. "READ /3/0/0"
//   WRITE <path> <value>           the library stored a Write of a single resource (value: see formatValue below)
//   EXECUTE <path> [<args>]        the library answered an Execute (args omitted when the payload is empty)
//   UPDATED                        after a 2.xx answer to an Update sent because of the stdin line "update"
//   SET <path> <value>             after the stdin line "set <path> <value>" (changes a value; notifies observers)
//   DEREGISTERED                   after the answer to Deregister (stdin "deregister", SIGTERM or SIGINT); then exit 0
//   ERROR <message>                on any failure, then exit 1 (also when --timeout, at most 120 s, expires)
// Library logs and node warnings go to stderr (level FATAL unless --verbose).
// stdin commands, one per line: "update", "deregister", "set <path> <value>". EOF on stdin is ignored.
//
// Wire behaviour of lwm2m-node-lib 1.4.0 (checked by selftest-server.js and tcpdump):
// - Register: CON POST /rd?ep=..&lt=..&lwm2m=1.0&b=U, payload "</1/0>,</3/0>", no Content-Format option.
//   The CoAP listener is then (re)bound to the Register's source port a few ms after the 2.01 arrives:
//   a request sent at once is lost and only its retransmission is answered.
// - Reads of single resources only (/3/0 -> 4.04): piggybacked 2.05, plain text, no Content-Format option.
//   Discover only with Accept: 40 (link-format body, no Content-Format option).
// - Write: PUT with Content-Format 0, 1541 or none -> 2.04 (payload stored as UTF-8 text).
// - Any request whose Content-Format or Accept is not one of 0,40,41,42,47,50,60,1541 (e.g. TLV 11542,
//   JSON 11543) is dropped silently by node-coap: no ACK, no response.
// - Update: CON POST /<location>?lt=..&lwm2m=1.0&b=U with the object list, from a NEW source port, where
//   a new listener is started (the old one keeps answering). Deregister: DELETE /<location> from another new port.
'use strict';

process.noDeprecation = true; // coap 0.22 uses new Buffer(); keep stderr readable

const path = require('path');

const MAX_RUN_S = 120;
const OP_TIMEOUT_MS = 15000; // bound for Register / Update / Deregister round-trips

// ---------------------------------------------------------------------------
// output helpers

function out(line) {
    // stdout to a pipe or file is synchronous on Linux; exit paths still wait for the write callback.
    process.stdout.write(line + '\n');
}

let exiting = false;
function finish(code, line) {
    if (exiting) {
        return;
    }
    exiting = true;
    process.stdout.write(line + '\n', () => process.exit(code));
    // in case the write callback never fires (closed pipe)
    setTimeout(() => process.exit(code), 1000).unref();
}

function fail(message) {
    finish(1, 'ERROR ' + String(message).replace(/[\r\n]+/g, ' '));
}

process.on('uncaughtException', (e) => fail('uncaught: ' + (e && e.stack ? e.stack.split('\n')[0] : e)));
process.on('unhandledRejection', (e) => fail('unhandled rejection: ' + e));
process.stdout.on('error', () => process.exit(1)); // reader went away

// Printable ASCII is printed as is (may contain spaces: it is the rest of the line);
// anything else as "hex:" + hex of the string's UTF-8 bytes. The library decodes every payload
// as UTF-8 before storing it, so invalid bytes (e.g. a TLV write) show up as efbfbd.
function formatValue(value) {
    const s = value === undefined || value === null ? '' : String(value);
    return /^[\x20-\x7e]*$/.test(s) ? s : 'hex:' + Buffer.from(s, 'utf8').toString('hex');
}

// ---------------------------------------------------------------------------
// arguments

function parseArgs(argv) {
    const args = { host: null, port: null, ep: null, lifetime: null, timeout: MAX_RUN_S, verbose: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) {
                throw new Error('missing value for ' + a);
            }
            return argv[++i];
        };
        switch (a) {
            case '--host': args.host = next(); break;
            case '--port': args.port = Number(next()); break;
            case '--ep': args.ep = next(); break;
            case '--lifetime': args.lifetime = Number(next()); break;
            case '--timeout': args.timeout = Number(next()); break;
            case '--verbose': args.verbose = true; break;
            default: throw new Error('unknown argument ' + a);
        }
    }
    if (!args.host) { throw new Error('--host is required'); }
    if (!Number.isInteger(args.port) || args.port < 1 || args.port > 65535) { throw new Error('--port must be 1..65535'); }
    if (!args.ep || !/^[A-Za-z0-9._:-]+$/.test(args.ep)) { throw new Error('--ep is required ([A-Za-z0-9._:-]+)'); }
    if (!Number.isInteger(args.lifetime) || args.lifetime < 1) { throw new Error('--lifetime must be a positive integer (s)'); }
    if (!(args.timeout > 0)) { throw new Error('--timeout must be > 0'); }
    args.timeout = Math.min(args.timeout, MAX_RUN_S);
    return args;
}

let args;
try {
    args = parseArgs(process.argv.slice(2));
} catch (e) {
    fail(e.message);
}

// Hard bound on the whole run, whatever happens.
if (args) {
    setTimeout(() => fail('timeout: still running after ' + args.timeout + ' s'), args.timeout * 1000);
}

// ---------------------------------------------------------------------------
// library setup

let client, logger;
if (args) {
    try {
        // Route the library's logger (logops, defaults to stdout) to stderr before anything logs.
        const libDir = path.dirname(require.resolve('lwm2m-node-lib/package.json'));
        logger = require(require.resolve('logops', { paths: [libDir] }));
        logger.setStream(process.stderr);
        logger.setLevel(args.verbose ? 'DEBUG' : 'FATAL');
        // The client half only: require('lwm2m-node-lib') would also load the server half and mongoose.
        client = require('lwm2m-node-lib/lib/lwm2m-client');
        // The library's CoAP listener binds 0.0.0.0; talking to a loopback server, bind it to 127.0.0.1.
        if (/^127\.|^localhost$/.test(args.host)) {
            const Server = require(require.resolve('coap', { paths: [libDir] })).createServer;
            const listen = Server.prototype.listen;
            Server.prototype.listen = function (port, address, done) {
                if (typeof address === 'function') { done = address; address = null; }
                return listen.call(this, port, address || '127.0.0.1', done);
            };
        }
    } catch (e) {
        fail('cannot load lwm2m-node-lib (run "npm ci" in tests/interop): ' + e.message);
    }
}

const level = args && args.verbose ? 'DEBUG' : 'FATAL';
const config = {
    logLevel: level, // lwm2m-client only calls logger.setLevel(config.client.logLevel) when this is set
    client: {
        lifetime: args ? String(args.lifetime) : '0',
        version: '1.0',
        logLevel: level,
        observe: { period: 3000 },
        ipProtocol: 'udp4',
        serverProtocol: 'udp4',
        formats: [{ name: 'lightweightm2m/text', value: 1541 }],
        writeFormat: 'lightweightm2m/text'
    }
};

// Objects, created in this order (the Register payload lists them in creation order: </1/0>,</3/0>).
const OBJECTS = [
    ['/1/0', { 0: '1', 1: '300', 6: 'false', 7: 'U' }], // Server: short id, lifetime, notif. storing, binding
    ['/3/0', {
        0: 'Open Mobile Alliance', // Manufacturer
        1: 'Lightweight M2M Client', // Model Number
        2: '345000123', // Serial Number
        3: '1.0', // Firmware Version
        9: '87', // Battery Level
        16: 'U' // Supported Binding and Modes
    }]
];

function createObjects(cb) {
    let pending = [];
    for (const [uri, resources] of OBJECTS) {
        pending.push((next) => client.registry.create(uri, next));
        for (const id of Object.keys(resources)) {
            pending.push((next) => client.registry.setResource(uri, id, resources[id], next));
        }
    }
    const step = (err) => {
        if (err) { return cb(err); }
        const f = pending.shift();
        return f ? f(step) : cb(null);
    };
    step(null);
}

// ---------------------------------------------------------------------------
// handlers: the library does the work (read value / store write / answer 2.04), these only report.

function resPath(objectType, objectId, resourceId) {
    return '/' + objectType + '/' + objectId + (resourceId === undefined || resourceId === null ? '' : '/' + resourceId);
}

// The library replaces serverInfo.handlers on every Register/Update (a new CoAP listener is started
// on the request's source port), so handlers are (re)installed after each of them.
function installHandlers(serverInfo) {
    client.setHandler(serverInfo, 'read', (objectType, objectId, resourceId, value, cb) => {
        out('READ ' + resPath(objectType, objectId, resourceId));
        cb(null); // no override: the stored value is returned
    });
    client.setHandler(serverInfo, 'write', (objectType, objectId, resourceId, value, cb) => {
        out('WRITE ' + resPath(objectType, objectId, resourceId) + ' ' + formatValue(value));
        cb(null);
    });
    client.setHandler(serverInfo, 'execute', (objectType, objectId, resourceId, argsPayload, cb) => {
        const a = argsPayload ? ' ' + formatValue(argsPayload) : '';
        out('EXECUTE ' + resPath(objectType, objectId, resourceId) + a);
        cb(null);
    });
}

// ---------------------------------------------------------------------------
// operations, each bounded by OP_TIMEOUT_MS (the library itself may wait minutes for CoAP retransmissions
// or never call back if its listener cannot start).

function bounded(name, fn, cb) {
    let done = false;
    const t = setTimeout(() => {
        if (!done) {
            done = true;
            cb(new Error(name + ' timed out after ' + OP_TIMEOUT_MS / 1000 + ' s'));
        }
    }, OP_TIMEOUT_MS);
    fn((err, res) => {
        if (done) { return; }
        done = true;
        clearTimeout(t);
        cb(err, res);
    });
}

let deviceInfo = null; // set once registered
let busy = false; // one operation at a time
const queue = [];

function errText(err) {
    return (err && (err.name ? err.name + ': ' : '') + (err.message || err.code || JSON.stringify(err))) || 'unknown error';
}

function runQueue() {
    if (busy || exiting) { return; }
    const job = queue.shift();
    if (!job) { return; }
    busy = true;
    job(() => {
        busy = false;
        runQueue();
    });
}

function enqueue(job) {
    queue.push(job);
    runQueue();
}

function doUpdate(done) {
    bounded('update', (cb) => client.update(deviceInfo, cb), (err, info) => {
        if (err) { return fail('update failed: ' + errText(err)); }
        deviceInfo = info || deviceInfo;
        installHandlers(deviceInfo.serverInfo);
        out('UPDATED');
        done();
    });
}

function doSet(uri, value, done) {
    const m = /^(\/\d+\/\d+)\/(\d+)$/.exec(uri || '');
    if (!m || value === undefined) {
        return fail('bad set command (want: set /<obj>/<inst>/<res> <value>)');
    }
    client.registry.setResource(m[1], m[2], value, (err) => {
        if (err) { return fail('set failed: ' + errText(err)); }
        out('SET ' + uri + ' ' + formatValue(value));
        done();
    });
}

let deregistering = false;
function doDeregister() {
    if (deregistering || exiting) { return; }
    deregistering = true;
    if (!deviceInfo) {
        return fail('terminated before registration completed');
    }
    bounded('deregister', (cb) => client.unregister(deviceInfo, cb), (err) => {
        if (err) { return fail('deregister failed: ' + errText(err)); }
        // Older listeners (one per Register/Update) may still be bound: exit explicitly.
        finish(0, 'DEREGISTERED');
    });
}

// ---------------------------------------------------------------------------
// stdin commands

function onLine(raw) {
    const line = raw.trim();
    if (!line) { return; }
    const cmd = line.split(/\s+/)[0];
    if (cmd === 'deregister') {
        // wait for a running operation, then deregister
        enqueue(() => doDeregister());
    } else if (!deviceInfo) {
        fail('command before registration: ' + cmd);
    } else if (cmd === 'update') {
        enqueue(doUpdate);
    } else if (cmd === 'set') {
        const m = /^set\s+(\S+)\s+(.*)$/.exec(line);
        enqueue((done) => doSet(m && m[1], m ? m[2] : undefined, done));
    } else {
        fail('unknown command: ' + cmd);
    }
}

function startStdin() {
    let buf = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
            const l = buf.slice(0, i);
            buf = buf.slice(i + 1);
            onLine(l);
        }
    });
    process.stdin.on('end', () => {
        if (buf) { onLine(buf); buf = ''; }
        // EOF is not a command: keep running until deregister/SIGTERM/timeout.
    });
    process.stdin.on('error', () => { /* ignore: stdin may be closed or absent */ });
}

// ---------------------------------------------------------------------------
// main

if (args && client && !exiting) {
    const onSignal = (sig) => (deviceInfo ? enqueue(() => doDeregister()) : fail(sig + ' before registration completed'));
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    busy = true; // hold stdin commands until registered
    startStdin();
    client.init(config, () => createObjects((err) => {
        if (err) { return fail('creating objects failed: ' + errText(err)); }
        bounded('register',
            (cb) => client.register(args.host, args.port, null, args.ep, cb),
            (err2, info) => {
                if (err2) { return fail('register failed: ' + errText(err2)); }
                deviceInfo = info;
                installHandlers(deviceInfo.serverInfo);
                out('REGISTERED ' + deviceInfo.location);
                busy = false;
                runQueue();
            });
    }));
}
