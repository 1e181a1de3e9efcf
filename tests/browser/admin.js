// The admin page in headless Chromium, driven step by step by tests/browser/test_admin_page.py.
//
//   node tests/browser/admin.js --port PORT --unix RELAY.sock --token T --profile DIR --shot PNG
//
// Runs inside `unshare --net` like call.js: it listens on 127.0.0.1:PORT in the namespace and
// relays every connection to RELAY.sock, which the test connects to the server's admin port.
// Talks with the test in JSON lines: prints {"step": ...} and reads commands on stdin:
//   {"wait_registration": AOR}        -> {"step": "registered", "rows": N}
//   {"ladder": CALL_ID, "arrows": N}  -> {"step": "ladder", "arrows": N, "raw": first line}
//   {"screenshot": PATH}              -> {"step": "screenshot"}
//   {"wait_reconnect": true}          -> {"step": "reconnected", "rows": N} (after a restart)
//   {"quit": true}
'use strict';

const readline = require('readline');
const { chromium } = require('playwright-core');
const { arg, relay, say, errorText, CHROMIUM_ARGS } = require('./common');

const port = Number(arg('port'));
const unixPath = arg('unix');
const token = arg('token');
const profile = arg('profile');
const executablePath = arg('chromium', '/usr/bin/chromium');

async function main() {
  const server = await relay(port, unixPath);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1440, height: 1500 },
    args: CHROMIUM_ARGS,
  });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') process.stderr.write('console: ' + m.text() + '\n');
  });
  page.on('pageerror', (e) => process.stderr.write('page error: ' + e + '\n'));
  // the sign-in page turns #token= into a cookie and loads the admin page
  await page.goto('http://127.0.0.1:' + port + '/#token=' + token);
  await page.waitForSelector('#link.on', { timeout: 30000 });
  say({ step: 'ready', title: await page.title() });

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    const command = JSON.parse(line);
    try {
      if (command.wait_registration) {
        const selector = '#registrations tr[data-aor="' + command.wait_registration + '"]';
        await page.waitForSelector(selector, { timeout: 30000 });
        say({ step: 'registered', rows: await page.locator('#registrations tbody tr[data-aor]').count() });
      } else if (command.ladder) {
        await page.waitForSelector('#call-select option[value="' + command.ladder + '"]',
          { state: 'attached', timeout: 30000 });
        await page.selectOption('#call-select', command.ladder);
        await page.waitForFunction((n) => document.querySelectorAll('#ladder .arrow').length >= n,
          command.arrows, { timeout: 30000 }).catch(() => {});
        const arrows = await page.locator('#ladder .arrow').count();
        const labels = await page.locator('#ladder .arrow text.label').allTextContents();
        // click the first arrow: its raw message opens below the ladder
        await page.locator('#ladder .arrow .hit').first().click({ force: true });
        await page.waitForSelector('#raw-wrap:not([hidden])', { timeout: 10000 });
        const raw = (await page.locator('#raw').textContent()).split('\n')[0];
        say({ step: 'ladder', arrows, labels, raw });
      } else if (command.wait_reconnect) {
        // the server went away and came back: the page notices both by itself
        await page.waitForFunction(() => window.reticulumAdmin.state.connects >= 2 &&
          document.querySelector('#link.on'), null, { timeout: 60000 });
        const rows = await page.locator('#registrations tbody tr[data-aor]').count();
        say({ step: 'reconnected', rows });
      } else if (command.screenshot) {
        await page.screenshot({ path: command.screenshot, fullPage: true });
        say({ step: 'screenshot' });
      } else if (command.quit) {
        break;
      }
    } catch (e) {
      say({ step: 'error', error: errorText(e) });
    }
  }
  await context.close().catch(() => {});
  server.close();
}

main().then(() => process.exit(0), (e) => {
  say({ step: 'error', error: errorText(e) });
  process.exit(1);
});
