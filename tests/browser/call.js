// Two JsSIP phones in headless Chromium call each other through Reticulum over WebSocket.
//
//   node tests/browser/call.js --port PORT --unix RELAY.sock --bundle jssip.js --profile DIR
//
// Meant to run inside `unshare --net` (a network namespace whose only interface is lo),
// so that Chromium cannot reach anything but loopback. The server runs outside; this
// script listens on 127.0.0.1:PORT inside the namespace and relays every connection to
// the Unix socket RELAY.sock, which a relay outside connects to the server's
// 127.0.0.1:PORT. Page and WebSocket share that origin: http://127.0.0.1:PORT/.
//
// Prints one JSON line {"ok": bool, "steps": [...], ...} and exits 0 when the call was
// confirmed on both sides, RTP flowed both ways and the hang-up ended it on both sides.
'use strict';

const { chromium } = require('playwright-core');
const { arg, relay, report, WEBRTC_ARGS } = require('./common');

const port = Number(arg('port'));
const unixPath = arg('unix');
const bundle = arg('bundle');
const profile = arg('profile');
const domain = arg('domain', 'reticulum.local');
const executablePath = arg('chromium', '/usr/bin/chromium');
const deadlineMs = Number(arg('timeout', '90')) * 1000;
const debug = process.argv.includes('--debug');

const result = {};
const { step, run } = report('call.js', result, deadlineMs);

// Runs in the page: one JsSIP UA, registered, that records what happens to its call.
async function startPhone({ user, password, domain, wsUrl }) {
  const JsSIP = window.JsSIP;
  const state = { registered: false, events: [], session: null, error: null };
  window.phone = state;
  const socket = new JsSIP.WebSocketInterface(wsUrl);
  const ua = new JsSIP.UA({
    sockets: [socket],
    uri: 'sip:' + user + '@' + domain,
    password,
    register: true,
    register_expires: 300,
    session_timers: false,
    connection_recovery_min_interval: 1,
    connection_recovery_max_interval: 2,
  });
  state.ua = ua;
  const watch = (session) => {
    state.session = session;
    for (const name of ['progress', 'accepted', 'confirmed', 'ended', 'failed']) {
      session.on(name, (e) => {
        state.events.push(name + (e && e.cause ? ':' + e.cause : ''));
      });
    }
  };
  ua.on('newRTCSession', (e) => {
    watch(e.session);
    if (e.originator === 'remote') {
      e.session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
    }
  });
  await new Promise((resolve, reject) => {
    ua.on('registered', () => { state.registered = true; resolve(); });
    ua.on('registrationFailed', (e) => reject(new Error('registration failed: ' + e.cause)));
    ua.start();
  });
  return true;
}

async function inboundBytes() {
  const session = window.phone.session;
  if (!session || !session.connection) return -1;
  const stats = await session.connection.getStats();
  let bytes = 0;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind === 'audio' || r.mediaType === 'audio')) bytes += r.bytesReceived || 0;
  });
  return bytes;
}

async function waitFor(page, expression, what, ms = 15000) {
  try {
    await page.waitForFunction(expression, null, { timeout: ms, polling: 100 });
  } catch (e) {
    const events = await page.evaluate(() => window.phone && window.phone.events).catch(() => null);
    throw new Error(what + ' did not happen (events: ' + JSON.stringify(events) + ')');
  }
}

async function main() {
  const server = await relay(port, unixPath);
  step('relay listening on 127.0.0.1:' + port);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    // the page at / is the webphone, whose Content-Security-Policy forbids the inline
    // script this test injects (its own JsSIP bundle)
    bypassCSP: true,
    args: WEBRTC_ARGS,
  });
  try {
    const origin = 'http://127.0.0.1:' + port + '/';
    const wsUrl = 'ws://127.0.0.1:' + port + '/';
    const pages = {};
    for (const user of ['alice', 'bob']) {
      const page = await context.newPage();
      page.on('console', (m) => {
        if (debug || m.type() === 'error') process.stderr.write(user + ' console: ' + m.text() + '\n');
      });
      await page.goto(origin);
      await page.addScriptTag({ path: bundle });
      if (debug) await page.evaluate(() => window.JsSIP.debug.enable('JsSIP:*'));
      await page.evaluate(startPhone, { user, password: user + '-secret', domain, wsUrl });
      step(user + ' registered');
      pages[user] = page;
    }
    const { alice, bob } = pages;
    await alice.evaluate((target) => {
      const session = window.phone.ua.call(target, {
        mediaConstraints: { audio: true, video: false },
        pcConfig: { iceServers: [] },
      });
      return !!session;
    }, 'sip:bob@' + domain);
    step('alice calls bob');
    await waitFor(alice, () => window.phone.events.includes('confirmed'), 'alice: confirmed');
    await waitFor(bob, () => window.phone.events.includes('confirmed'), 'bob: confirmed');
    step('call confirmed on both sides');
    // RTP both ways (fake microphone on both sides)
    const deadline = Date.now() + 15000;
    let a = 0;
    let b = 0;
    while (Date.now() < deadline) {
      a = await alice.evaluate(inboundBytes);
      b = await bob.evaluate(inboundBytes);
      if (a > 2000 && b > 2000) break;  // a second or so of audio each way
      await new Promise((r) => setTimeout(r, 250));
    }
    result.alice_inbound_bytes = a;
    result.bob_inbound_bytes = b;
    if (!(a > 0 && b > 0)) throw new Error('no RTP: alice got ' + a + ' bytes, bob ' + b);
    step('RTP flows: alice received ' + a + ' bytes, bob ' + b);
    await alice.evaluate(() => window.phone.session.terminate());
    await waitFor(alice, () => window.phone.events.some((e) => e.startsWith('ended')), 'alice: ended');
    await waitFor(bob, () => window.phone.events.some((e) => e.startsWith('ended')), 'bob: ended');
    result.alice_events = await alice.evaluate(() => window.phone.events);
    result.bob_events = await bob.evaluate(() => window.phone.events);
    step('hang-up ended the call on both sides');
    for (const page of [alice, bob]) {
      await page.evaluate(() => new Promise((resolve) => {
        window.phone.ua.on('unregistered', resolve);
        window.phone.ua.stop();
        setTimeout(resolve, 2000);
      }));
    }
    result.ok = true;
  } finally {
    await context.close().catch(() => {});
    server.close();
  }
}

run(main);
