#!/usr/bin/env node
// Self-test of node-client.js against a minimal raw-CoAP LwM2M server (no gateway needed).
//
//   npm ci --prefix tests/interop && node tests/interop/selftest-server.js
//
// The server binds 127.0.0.1 on a free port, runs node-client.js, answers its Register / Update /
// Deregister, and sends Read / Discover / Write / Execute / Observe from its own port, as a real LwM2M
// server does. Each assertion prints "ok - ..." or "not ok - ..."; "note: ..." lines record wire facts.
// Ends with "selftest: N passed, M failed" and exits non-zero on any failure. Bounded to 90 s.
'use strict';

const dgram = require('dgram');
const path = require('path');
const { spawn } = require('child_process');
const { parse, generate } = require('coap-packet');

const CLIENT = path.join(__dirname, 'node-client.js');
const CF_TEXT = 0;
const CF_LINK = 40;
const CF_TLV = 11542;

let passed = 0;
let failed = 0;
const children = new Set();

function check(name, cond, detail) {
    if (cond) {
        passed++;
        console.log('ok - ' + name);
    } else {
        failed++;
        console.log('not ok - ' + name + (detail !== undefined ? ' (got: ' + JSON.stringify(detail) + ')' : ''));
    }
}

function note(s) {
    console.log('note: ' + s);
}

function done() {
    for (const c of children) { c.kill('SIGKILL'); }
    console.log('selftest: ' + passed + ' passed, ' + failed + ' failed');
    process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

setTimeout(() => { failed++; console.log('not ok - selftest deadline (90 s) exceeded'); done(); }, 90000).unref();

// ---------------------------------------------------------------------------
// CoAP helpers (coap-packet does the encoding; options are raw Buffers)

const uintBuf = (n) => {
    if (n === 0) { return Buffer.alloc(0); }
    const b = Buffer.alloc(n > 255 ? 2 : 1);
    n > 255 ? b.writeUInt16BE(n) : b.writeUInt8(n);
    return b;
};
const bufUint = (b) => b.reduce((acc, x) => acc * 256 + x, 0);
const opt = (pkt, name) => pkt.options.filter((o) => o.name === name).map((o) => o.value);
const optUint = (pkt, name) => { const v = opt(pkt, name); return v.length ? bufUint(v[0]) : null; };
const uriPath = (pkt) => opt(pkt, 'Uri-Path').map(String).join('/');
const uriQuery = (pkt) => opt(pkt, 'Uri-Query').map(String).join('&');

const sock = dgram.createSocket('udp4');
let nextMid = Math.floor(Math.random() * 60000);
let nextTok = 1;
const pending = new Map(); // token hex -> resolve
const incoming = []; // requests from the client, consumed by waitRequest
let requestWaiter = null;
let autoReply = null; // function(pkt, rinfo) -> reply fields or null

function send(fields, rinfo) {
    const buf = generate(fields);
    sock.send(buf, rinfo.port, rinfo.address);
}

sock.on('message', (msg, rinfo) => {
    let pkt;
    try { pkt = parse(msg); } catch (e) { note('unparsable datagram from ' + rinfo.port); return; }
    const isRequest = /^0\.0[1-4]$/.test(pkt.code);
    if (isRequest && !pkt.ack && !pkt.reset) {
        const r = autoReply && autoReply(pkt, rinfo);
        if (r) {
            send(Object.assign({ ack: true, messageId: pkt.messageId, token: pkt.token }, r), rinfo);
        }
        incoming.push({ pkt, rinfo });
        if (requestWaiter) { requestWaiter(); }
        return;
    }
    if (pkt.code === '0.00') { return; } // empty ACK (separate response follows) or RST
    if (pkt.confirmable) { // separate response or notification: ACK it
        send({ ack: true, messageId: pkt.messageId, code: '0.00' }, rinfo);
    }
    const key = pkt.token.toString('hex');
    const resolve = pending.get(key);
    if (resolve) { resolve({ pkt, rinfo }); }
});

function waitRequest(timeoutMs) {
    return new Promise((resolve) => {
        const t = setTimeout(() => { requestWaiter = null; resolve(null); }, timeoutMs);
        const tryTake = () => {
            if (incoming.length) {
                clearTimeout(t);
                requestWaiter = null;
                resolve(incoming.shift());
            }
        };
        requestWaiter = tryTake;
        tryTake();
    });
}

// Send one CON request from the server port; resolve with the response packet or null after timeoutMs.
// keep: leave the token registered (Observe notifications); returns {first, next()}.
function request(to, { method, path: p, cf, accept, payload, observe }, timeoutMs = 2000) {
    const token = Buffer.alloc(4);
    token.writeUInt32BE(nextTok++);
    const options = p.split('/').filter(Boolean).map((s) => ({ name: 'Uri-Path', value: Buffer.from(s) }));
    if (observe !== undefined) { options.push({ name: 'Observe', value: uintBuf(observe) }); }
    if (cf !== undefined) { options.push({ name: 'Content-Format', value: uintBuf(cf) }); }
    if (accept !== undefined) { options.push({ name: 'Accept', value: uintBuf(accept) }); }
    const key = token.toString('hex');
    const queue = [];
    let waiter = null;
    pending.set(key, (r) => { queue.push(r); if (waiter) { waiter(); } });
    const next = (ms) => new Promise((resolve) => {
        const t = setTimeout(() => { waiter = null; resolve(null); }, ms);
        const tryTake = () => { if (queue.length) { clearTimeout(t); waiter = null; resolve(queue.shift().pkt); } };
        waiter = tryTake;
        tryTake();
    });
    nextMid = (nextMid + 1) & 0xffff;
    send({ confirmable: true, code: method, messageId: nextMid, token, options,
        payload: payload === undefined ? Buffer.alloc(0) : Buffer.from(payload) }, to);
    return next(timeoutMs).then((first) => {
        if (observe === undefined) { pending.delete(key); }
        return observe === undefined ? first : { first, next };
    });
}

// ---------------------------------------------------------------------------
// client process helpers

function startClient(port, ep, extra = []) {
    const child = spawn(process.execPath, [CLIENT, '--host', '127.0.0.1', '--port', String(port),
        '--ep', ep, '--lifetime', '60', '--timeout', '60', ...extra], { stdio: ['pipe', 'pipe', 'pipe'] });
    children.add(child);
    const lines = [];
    let waiter = null;
    let buf = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
            lines.push(buf.slice(0, i));
            buf = buf.slice(i + 1);
            if (waiter) { waiter(); }
        }
    });
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.on('exit', (code, sig) => { children.delete(child); resolve({ code, sig }); }));
    return {
        child,
        exited,
        stderr: () => stderr,
        all: lines,
        // next stdout line (in order), or null after timeoutMs
        line(timeoutMs = 3000) {
            return new Promise((resolve) => {
                const t = setTimeout(() => { waiter = null; resolve(null); }, timeoutMs);
                const tryTake = () => { if (lines.length) { clearTimeout(t); waiter = null; resolve(lines.shift()); } };
                waiter = tryTake;
                tryTake();
            });
        },
        send(cmd) { child.stdin.write(cmd + '\n'); }
    };
}

function withTimeout(p, ms) {
    return Promise.race([p, new Promise((r) => setTimeout(() => r(null), ms))]);
}

// ---------------------------------------------------------------------------
// scenarios

async function mainScenario(port) {
    autoReply = (pkt) => {
        const p = uriPath(pkt);
        if (pkt.code === '0.02' && p === 'rd') {
            return { code: '2.01', options: [{ name: 'Location-Path', value: Buffer.from('rd') },
                { name: 'Location-Path', value: Buffer.from('5a') }] };
        }
        if (pkt.code === '0.02' && p === 'rd/5a') { return { code: '2.04' }; }
        if (pkt.code === '0.04' && p === 'rd/5a') { return { code: '2.02' }; }
        return { code: '4.04' };
    };
    const c = startClient(port, 'selftest-ep');

    // Register
    const reg = await waitRequest(10000);
    check('client sends Register', reg && reg.pkt.code === '0.02' && uriPath(reg.pkt) === 'rd', reg && uriPath(reg.pkt));
    if (!reg) { return; }
    const q = uriQuery(reg.pkt);
    check('Register query is ep=selftest-ep&lt=60&lwm2m=1.0&b=U', q === 'ep=selftest-ep&lt=60&lwm2m=1.0&b=U', q);
    check('Register payload lists </1/0>,</3/0>', String(reg.pkt.payload) === '</1/0>,</3/0>', String(reg.pkt.payload));
    note('Register: CON=' + reg.pkt.confirmable + ' Content-Format=' + optUint(reg.pkt, 'Content-Format') +
        ' (null = option absent) from ' + reg.rinfo.address + ':' + reg.rinfo.port);
    check('stdout REGISTERED rd/5a', (await c.line(5000)) === 'REGISTERED rd/5a');
    const dev = reg.rinfo;

    // Reads of single resources: text payload
    for (const [p, want] of [['3/0/0', 'Open Mobile Alliance'], ['3/0/1', 'Lightweight M2M Client'],
        ['3/0/9', '87'], ['1/0/1', '300']]) {
        const r = await request(dev, { method: 'GET', path: p });
        check('Read /' + p + ' -> 2.05 "' + want + '"', r && r.code === '2.05' && String(r.payload) === want,
            r && [r.code, String(r.payload)]);
        check('stdout READ /' + p, (await c.line()) === 'READ /' + p);
        if (p === '3/0/0' && r) {
            note('Read response: ACK(piggybacked)=' + r.ack + ' Content-Format=' + optUint(r, 'Content-Format') +
                ' (null = option absent)');
        }
    }
    let r = await request(dev, { method: 'GET', path: '3/0/0', accept: CF_TEXT });
    check('Read /3/0/0 with Accept 0 (text/plain) -> 2.05', r && r.code === '2.05', r && r.code);
    await c.line();
    r = await request(dev, { method: 'GET', path: '3/0/0', accept: CF_TLV });
    note('Read /3/0/0 with Accept 11542 (TLV): ' + (r ? r.code : 'no response at all (datagram dropped)'));
    r = await request(dev, { method: 'GET', path: '3/0' });
    note('Read /3/0 (whole instance): ' + (r ? r.code + ' ' + JSON.stringify(String(r.payload)) : 'no response'));
    r = await request(dev, { method: 'GET', path: '3/0/5' });
    check('Read of a missing resource /3/0/5 -> 4.04', r && r.code === '4.04', r && r.code);

    // Discover needs Accept: 40
    r = await request(dev, { method: 'GET', path: '3/0', accept: CF_LINK });
    check('Discover /3/0 (GET + Accept 40) -> 2.05 link-format', r && r.code === '2.05' && String(r.payload).startsWith('</3/0>,</3/0/0>'),
        r && [r.code, String(r.payload)]);
    if (r) { note('Discover /3/0 payload: ' + String(r.payload) + ' Content-Format=' + optUint(r, 'Content-Format')); }
    r = await request(dev, { method: 'GET', path: '3', accept: CF_LINK });
    note('Discover /3: ' + (r ? r.code + ' ' + String(r.payload) : 'no response'));

    // Write
    r = await request(dev, { method: 'PUT', path: '1/0/1', cf: CF_TEXT, payload: '120' });
    check('Write /1/0/1 "120" (Content-Format 0) -> 2.04', r && r.code === '2.04', r && r.code);
    check('stdout WRITE /1/0/1 120', (await c.line()) === 'WRITE /1/0/1 120');
    r = await request(dev, { method: 'GET', path: '1/0/1' });
    check('Read-back /1/0/1 -> "120"', r && String(r.payload) === '120', r && String(r.payload));
    await c.line();
    r = await request(dev, { method: 'PUT', path: '1/0/1', payload: '130' });
    note('Write without Content-Format: ' + (r ? r.code : 'no response') + ', stdout ' + JSON.stringify(await c.line(1000)));
    // TLV: single resource 1/0/1 = 300 (type 0b11 resource-with-value, id 8 bit, length 2)
    r = await request(dev, { method: 'PUT', path: '1/0/1', cf: CF_TLV, payload: Buffer.from([0xc2, 0x01, 0x01, 0x2c]) });
    note('Write with Content-Format 11542 (TLV): ' + (r ? r.code : 'no response at all (datagram dropped)') +
        ', stdout ' + JSON.stringify(await c.line(500)));
    r = await request(dev, { method: 'PUT', path: '1/0/1', cf: 1541, payload: '140' });
    note('Write with Content-Format 1541 (pre-1.0 text): ' + (r ? r.code : 'no response') + ', stdout ' + JSON.stringify(await c.line(1000)));

    // Execute
    r = await request(dev, { method: 'POST', path: '3/0/4' });
    check('Execute /3/0/4 -> 2.04', r && r.code === '2.04', r && r.code);
    check('stdout EXECUTE /3/0/4', (await c.line()) === 'EXECUTE /3/0/4');
    r = await request(dev, { method: 'POST', path: '3/0/4', cf: CF_TEXT, payload: "0='x'" });
    check('Execute /3/0/4 with args -> 2.04', r && r.code === '2.04', r && r.code);
    check("stdout EXECUTE /3/0/4 0='x'", (await c.line()) === "EXECUTE /3/0/4 0='x'");

    // Observe + notification on "set"
    const obs = await request(dev, { method: 'GET', path: '3/0/9', observe: 0 });
    check('Observe /3/0/9 -> 2.05 "87" with Observe option', obs.first && obs.first.code === '2.05' &&
        String(obs.first.payload) === '87' && optUint(obs.first, 'Observe') !== null, obs.first && obs.first.code);
    check('stdout READ /3/0/9 (observe)', (await c.line()) === 'READ /3/0/9');
    c.send('set /3/0/9 50');
    check('stdout SET /3/0/9 50', (await c.line()) === 'SET /3/0/9 50');
    const n = await obs.next(3000);
    check('Notification "50" after set', n && String(n.payload) === '50', n && String(n.payload));
    if (n) { note('Notification: CON=' + n.confirmable + ' Observe=' + optUint(n, 'Observe') + ' Content-Format=' + optUint(n, 'Content-Format')); }

    // Update
    c.send('update');
    const upd = await waitRequest(5000);
    check('client sends Update POST rd/5a', upd && upd.pkt.code === '0.02' && uriPath(upd.pkt) === 'rd/5a', upd && uriPath(upd.pkt));
    if (upd) {
        const uq = uriQuery(upd.pkt);
        check('Update query is lt=60&lwm2m=1.0&b=U', uq === 'lt=60&lwm2m=1.0&b=U', uq);
        note('Update payload: ' + JSON.stringify(String(upd.pkt.payload)) + ' from port ' + upd.rinfo.port +
            ' (Register came from ' + dev.port + ')');
    }
    check('stdout UPDATED', (await c.line(5000)) === 'UPDATED');
    if (upd) {
        r = await request(upd.rinfo, { method: 'GET', path: '3/0/9' });
        check('Read via the Update source port -> "50"', r && String(r.payload) === '50', r && String(r.payload));
        check('stdout READ /3/0/9 (new port)', (await c.line()) === 'READ /3/0/9');
        if (upd.rinfo.port !== dev.port) {
            r = await request(dev, { method: 'GET', path: '3/0/9' });
            note('Read via the old Register port after Update: ' + (r ? r.code : 'no response') +
                ', stdout ' + JSON.stringify(await c.line(500)));
        }
    }

    // Deregister
    c.send('deregister');
    const del = await waitRequest(5000);
    check('client sends Deregister DELETE rd/5a', del && del.pkt.code === '0.04' && uriPath(del.pkt) === 'rd/5a', del && uriPath(del.pkt));
    if (del) { note('Deregister from port ' + del.rinfo.port + ' (Register port ' + dev.port + ')'); }
    check('stdout DEREGISTERED', (await c.line(5000)) === 'DEREGISTERED');
    const ex = await withTimeout(c.exited, 5000);
    check('client exits 0 after deregister', ex && ex.code === 0, ex);
}

async function sigtermScenario(port) {
    incoming.length = 0;
    const c = startClient(port, 'selftest-term');
    const reg = await waitRequest(10000);
    const l = await c.line(5000);
    check('2nd client registers', reg && l === 'REGISTERED rd/5a', l);
    c.child.kill('SIGTERM');
    const del = await waitRequest(5000);
    check('SIGTERM -> Deregister DELETE rd/5a', del && del.pkt.code === '0.04', del && del.pkt.code);
    check('SIGTERM -> stdout DEREGISTERED', (await c.line(5000)) === 'DEREGISTERED');
    const ex = await withTimeout(c.exited, 5000);
    check('SIGTERM -> exit 0', ex && ex.code === 0, ex);
}

async function rejectScenario(port) {
    incoming.length = 0;
    autoReply = () => ({ code: '4.03' });
    const c = startClient(port, 'selftest-reject');
    const l = await c.line(10000);
    check('rejected Register -> stdout ERROR ...', l !== null && l.startsWith('ERROR '), l);
    const ex = await withTimeout(c.exited, 5000);
    check('rejected Register -> exit 1', ex && ex.code === 1, ex);
}

sock.bind(0, '127.0.0.1', async () => {
    const port = sock.address().port;
    note('raw LwM2M server on 127.0.0.1:' + port);
    try {
        await mainScenario(port);
        await sigtermScenario(port);
        await rejectScenario(port);
    } catch (e) {
        failed++;
        console.log('not ok - exception: ' + (e && e.stack));
    }
    done();
});
