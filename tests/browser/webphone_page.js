// The webphone page served by Reticulum at /, driven like a person would in headless Chromium.
//
//   node tests/browser/webphone_page.js --port PORT --unix RELAY.sock
//       [--wss-port PORT --wss-unix RELAY.sock] --shots DIR [--debug]
//
// Runs inside `unshare --net` like call.js: 127.0.0.1:PORT here is relayed to the Unix
// socket RELAY.sock, which the test connects to the server's page/WebSocket port.
// One Chromium, one browser context (own storage) per person:
//   a wrong password shows a readable error; alice and bob sign in; alice calls bob by
//   name; bob's page rings with alice's name and he answers; both show the call connected,
//   audio flows both ways (getStats), a keypad tone and mute work; alice hangs up and both
//   pages say so; the call is in alice's history; alice's text message arrives on bob's
//   page; a page opened with ?call=sip:bob@... dials bob once signed in; the kiosk page's
//   button calls its target and hangs up by itself; the page over HTTPS (the WSS port) is a
//   secure context and signs in over WSS.
// Prints one JSON line {"ok": bool, "steps": [...], ...}.
'use strict';

const path = require('path');
const { chromium } = require('playwright-core');
const { arg, relay, report, WEBRTC_ARGS } = require('./common');

const port = Number(arg('port'));
const unixPath = arg('unix');
const wssPort = Number(arg('wss-port', '0'));
const wssUnixPath = arg('wss-unix');
const shots = arg('shots');
const domain = arg('domain', 'reticulum.local');
const executablePath = arg('chromium', '/usr/bin/chromium');
const deadlineMs = Number(arg('timeout', '150')) * 1000;
const debug = process.argv.includes('--debug');

const result = { page_errors: [] };
const { step, run } = report('webphone_page.js', result, deadlineMs);

const PHONE = { width: 400, height: 760 };

async function openPage(browser, who, url) {
  // https: the server's self-signed certificate, trusted as the README says to
  const context = await browser.newContext({ viewport: PHONE, deviceScaleFactor: 1, ignoreHTTPSErrors: true });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (debug || m.type() === 'error') process.stderr.write(who + ' console: ' + m.text() + '\n');
  });
  page.on('pageerror', (e) => result.page_errors.push(who + ': ' + String(e)));
  await page.goto(url);
  return page;
}

async function signIn(page, user, password) {
  await page.waitForSelector('#signin:not([hidden])');
  await page.fill('#user', user);
  await page.fill('#password', password);
  await page.press('#password', 'Enter'); // the keyboard way
}

async function textOf(page, selector) {
  return (await page.textContent(selector)) || '';
}

async function waitText(page, selector, pattern, what, ms = 20000) {
  try {
    await page.waitForFunction(({ selector, source }) => {
      const node = document.querySelector(selector);
      return node && new RegExp(source).test(node.textContent);
    }, { selector, source: pattern.source }, { timeout: ms, polling: 100 });
  } catch (e) {
    const now = await textOf(page, selector).catch(() => '?');
    throw new Error(what + ': ' + selector + ' never matched ' + pattern + ' (it says: ' + JSON.stringify(now) + ')');
  }
}

async function waitVisible(page, selector, what, ms = 20000) {
  try {
    await page.waitForSelector(selector, { state: 'visible', timeout: ms });
  } catch (e) {
    throw new Error(what + ': ' + selector + ' never became visible');
  }
}

// in the page: audio bytes received on the call on screen
async function inboundBytes() {
  const s = window.webphone.session;
  if (!s || !s.connection) return -1;
  const stats = await s.connection.getStats();
  let bytes = 0;
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind === 'audio' || r.mediaType === 'audio')) bytes += r.bytesReceived || 0;
  });
  return bytes;
}

async function shot(page, name) {
  const file = path.join(shots, name + '.png');
  await page.screenshot({ path: file });
  result.screenshots = (result.screenshots || []).concat([file]);
}

async function main() {
  const server = await relay(port, unixPath);
  const wssServer = wssPort ? await relay(wssPort, wssUnixPath) : null;
  step('relay listening on 127.0.0.1:' + port + (wssPort ? ' and ' + wssPort : ''));
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: WEBRTC_ARGS.concat(['--autoplay-policy=no-user-gesture-required']),
  });
  try {
    const origin = 'http://127.0.0.1:' + port + '/';

    // -- a wrong password, in words
    const wrong = await openPage(browser, 'wrong', origin);
    await signIn(wrong, 'alice', 'not-her-password');
    await waitText(wrong, '#notice', /Wrong user name or password/, 'wrong password');
    result.wrong_password_notice = await textOf(wrong, '#notice');
    step('a wrong password says: ' + result.wrong_password_notice);
    await shot(wrong, 'wrong-password');
    // nothing listens on port 9 in this namespace
    await wrong.click('#server-settings summary');
    await wrong.fill('#ws-url', 'ws://127.0.0.1:9/');
    await wrong.fill('#password', 'alice-secret');
    await wrong.click('#signin-button');
    await waitText(wrong, '#notice', /Server unreachable/, 'no server');
    result.unreachable_notice = await textOf(wrong, '#notice');
    step('no server says: ' + result.unreachable_notice);
    await wrong.context().close();

    // -- alice and bob sign in
    const alice = await openPage(browser, 'alice', origin);
    const bob = await openPage(browser, 'bob', origin);
    await signIn(alice, 'alice', 'alice-secret');
    await signIn(bob, 'bob', 'bob-secret');
    for (const [who, page] of [['alice', alice], ['bob', bob]]) {
      await waitText(page, '#status', new RegExp('Signed in as ' + who + '@' + domain.replace(/\./g, '\\.')), who + ' signs in');
      await waitVisible(page, '#phone', who + ' phone');
    }
    step('alice and bob signed in');
    await shot(alice, 'signed-in');

    // -- alice calls bob by name; bob's page rings and shows her name
    await alice.fill('#target', 'bob');
    await alice.click('#call-button');
    await waitVisible(bob, '#incoming', 'bob rings');
    result.incoming_name = await textOf(bob, '#incoming-name');
    if (result.incoming_name !== 'alice') throw new Error('incoming call shows ' + JSON.stringify(result.incoming_name));
    await waitText(alice, '#call-state', /Ringing|Calling/, 'alice sees the call go out');
    result.bob_sound = await bob.evaluate(() => window.webphone.sound.playing + ':' + window.webphone.sound.ctx.state);
    step('bob\'s page rings: ' + result.incoming_name);
    await shot(bob, 'incoming-call');
    await bob.click('#answer');
    await waitText(alice, '#call-state', /^Connected/, 'alice connected');
    await waitText(bob, '#call-state', /^Connected/, 'bob connected');
    step('the call is connected on both pages');

    // -- audio both ways
    const deadline = Date.now() + 20000;
    let a = 0;
    let b = 0;
    while (Date.now() < deadline) {
      a = await alice.evaluate(inboundBytes);
      b = await bob.evaluate(inboundBytes);
      if (a > 2000 && b > 2000) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    result.alice_inbound_bytes = a;
    result.bob_inbound_bytes = b;
    if (!(a > 0 && b > 0)) throw new Error('no audio: alice got ' + a + ' bytes, bob ' + b);
    step('audio flows: alice received ' + a + ' bytes, bob ' + b);
    await waitText(alice, '#call-timer', /^0:0[1-9]|^0:[1-5]\d/, 'the call duration counts');

    // -- keypad tone (RFC 4733) and mute
    await alice.click('#keypad-toggle');
    await alice.click('#keypad button[aria-label="Tone 5"]');
    await waitText(alice, '#dtmf-sent', /5/, 'keypad tone');
    await alice.click('#mute');
    result.muted = await alice.getAttribute('#mute', 'aria-pressed');
    await alice.click('#mute');
    await shot(alice, 'in-call');

    // -- alice hangs up; both pages say so
    await alice.click('#hangup');
    await waitText(alice, '#call-state', /Call ended/, 'alice ended');
    await waitText(bob, '#call-state', /alice hung up/, 'bob sees the hang-up');
    step('alice hung up; both pages show it');
    result.alice_history = await alice.evaluate(() => JSON.parse(localStorage.getItem('reticulum.history.alice@' + window.webphone.domain)));

    // -- a text message from alice arrives on bob's page
    await alice.click('#tab-messages');
    await alice.fill('#msg-to', 'bob');
    await alice.fill('#msg-text', 'Dinner is ready!');
    await alice.press('#msg-text', 'Enter');
    await waitVisible(bob, '#unread', 'bob\'s unread badge');
    await bob.click('#tab-messages');
    await waitText(bob, '#msg-log', /Dinner is ready!/, 'the message on bob\'s page');
    step('alice\'s message arrived on bob\'s page');
    await shot(bob, 'messages');
    await bob.click('#tab-dial');

    // -- ?call=sip:bob@...: dials bob as soon as it is signed in
    const linked = await openPage(browser, 'link', origin + '?call=' + encodeURIComponent('sip:bob@' + domain));
    await signIn(linked, 'alice', 'alice-secret');
    await waitVisible(bob, '#incoming', 'bob rings from the link');
    result.link_incoming_name = await textOf(bob, '#incoming-name');
    await bob.click('#reject');
    await waitText(linked, '#call-state', /bob declined the call/, 'the link page hears the decline');
    result.link_url_after = linked.url();
    step('?call=sip:bob@' + domain + ' dialled bob after sign-in');
    await linked.context().close();

    // -- the kiosk: one button calling its target; hangs up by itself
    const kiosk = await openPage(browser, 'kiosk', origin + '?kiosk=bob@' + domain + '&hangup=8#user=door&password=door-secret');
    await waitVisible(kiosk, '#kiosk-call', 'the kiosk button');
    await waitText(kiosk, '#kiosk-state', /Press the button/, 'kiosk ready');
    await shot(kiosk, 'kiosk');
    await kiosk.click('#kiosk-call');
    await waitVisible(bob, '#incoming', 'bob rings from the kiosk');
    result.kiosk_incoming_name = await textOf(bob, '#incoming-name');
    await bob.click('#answer');
    await waitText(kiosk, '#kiosk-state', /Connected/, 'kiosk connected');
    await shot(kiosk, 'kiosk-in-call');
    await waitText(bob, '#call-state', /door hung up/, 'the kiosk hangs up by itself', 20000);
    step('the kiosk button called bob and hung up by itself');
    if (wssPort) {
      // the page over HTTPS registers over WSS on its own origin: a secure context
      const secure = await openPage(browser, 'carol', 'https://127.0.0.1:' + wssPort + '/');
      await signIn(secure, 'carol', 'carol-secret');
      await waitText(secure, '#status', /Signed in as carol@/, 'carol signs in over WSS');
      result.wss = await secure.evaluate(() => ({ secure: window.isSecureContext, ws: window.webphone.wsUrl }));
      step('over HTTPS the page signs in over ' + result.wss.ws);
    }
    result.link_forms = await kiosk.evaluate(() => [
      'web+reticulum://call?home@reticulum.local', 'reticulum://call?home@reticulum.local',
      'sip:home@reticulum.local', 'home', 'web+reticulum:home%40reticulum.local',
    ].map((t) => window.webphone.targetUri(t)));
    result.ok = true;
  } finally {
    await browser.close().catch(() => {});
    server.close();
    if (wssServer) wssServer.close();
  }
}

run(main);
