// What the browser scripts share (CommonJS: `require('./common')`).
//
// They run inside `unshare --net` (a network namespace whose only interface is lo), so that
// Chromium cannot reach anything but loopback. The server runs outside; a script listens on
// 127.0.0.1:PORT inside the namespace and relays every connection to a Unix socket, which
// the test (tests/browser/driver.py) connects to the server's 127.0.0.1:PORT.
'use strict';

const net = require('net');

// --name VALUE on the command line, or fallback
function arg(name, fallback) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

// Listens on 127.0.0.1:port and pipes every connection to the Unix socket unixPath.
function relay(port, unixPath) {
  return new Promise((resolve, reject) => {
    const server = net.createServer((client) => {
      const upstream = net.connect(unixPath);
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => { client.destroy(); upstream.destroy(); };
      client.on('error', end);
      upstream.on('error', end);
      client.on('close', end);
      upstream.on('close', end);
    });
    server.on('error', reject);
    server.listen(port, '127.0.0.1', () => resolve(server));
  });
}

// Chromium (launched with headless: true) quiet: no sandbox (root in the namespace), no calls home
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

// ...and for WebRTC on loopback: real candidates on lo, a fake microphone, no prompt
const WEBRTC_ARGS = CHROMIUM_ARGS.concat([
  '--disable-quic',
  '--disable-features=WebRtcHideLocalIpsWithMdns',
  '--use-fake-ui-for-media-stream',
  '--use-fake-device-for-media-stream',
  '--allow-loopback-in-peer-connection',
]);

function errorText(e) {
  return String(e && e.stack ? e.stack : e);
}

// The line protocol of a script run to its end: steps on stderr as they happen, one JSON
// line {"ok": bool, "steps": [...], ...} on stdout at the end, exit 0 only when ok.
// run(main) calls main() and reports whatever it left in result, or a timeout.
function report(name, result, deadlineMs) {
  result.ok = false;
  result.steps = [];
  const finish = (code) => {
    console.log(JSON.stringify(result));
    process.exit(code);
  };
  return {
    step(text) {
      result.steps.push(text);
      process.stderr.write(name + ': ' + text + '\n');
    },
    run(main) {
      setTimeout(() => {
        result.error = 'timed out';
        finish(1);
      }, deadlineMs);
      main().catch((e) => { result.error = errorText(e); }).then(() => finish(result.ok ? 0 : 1));
    },
  };
}

// The line protocol of a script the test drives: one JSON object a line each way.
function say(data) {
  process.stdout.write(JSON.stringify(data) + '\n');
}

module.exports = { arg, relay, CHROMIUM_ARGS, WEBRTC_ARGS, errorText, report, say };
