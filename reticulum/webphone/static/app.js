// Reticulum's webphone: JsSIP (jssip.min.js, built from npm by ./run.sh) in one page.
//
// Query parameters:
//   ?call=<target>        dial <target> once signed in: sip:bob@example.org, bob,
//                         web+reticulum://call?bob@example.org, reticulum://call?bob@...
//   ?kiosk=<target>       door-phone mode: one big button that calls <target>
//   &hangup=<seconds>     hang up by itself after that long (kiosk: 60 by default)
//   &user=..&password=..  sign in with these (kiosk; better in the #fragment, which never
//                         reaches a server), remembered on this device
//   &domain=.., &ws=..    override the SIP domain and the WebSocket address
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.slice(1));
  const param = (name) => fragment.get(name) || query.get(name) || '';

  // -- small helpers ----------------------------------------------------------------------

  const store = {
    get(key, fallback) {
      try {
        const v = localStorage.getItem('reticulum.' + key);
        return v === null ? fallback : JSON.parse(v);
      } catch (e) { return fallback; }
    },
    set(key, value) {
      try { localStorage.setItem('reticulum.' + key, JSON.stringify(value)); } catch (e) { /* full or off */ }
    },
    remove(key) {
      try { localStorage.removeItem('reticulum.' + key); } catch (e) { /* off */ }
    },
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function show(node, visible) { node.hidden = !visible; }

  function clock(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    const h = Math.floor(s / 3600);
    const m = Math.floor((s % 3600) / 60);
    const rest = String(s % 60).padStart(2, '0');
    return h ? h + ':' + String(m).padStart(2, '0') + ':' + rest : m + ':' + rest;
  }

  function when(time) {
    const d = new Date(time);
    const today = new Date();
    const t = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    return d.toDateString() === today.toDateString() ? t : d.toLocaleDateString() + ' ' + t;
  }

  function isIp(host) { return /^[\d.]+$/.test(host) || host.includes(':'); }

  // -- settings from the page's origin ----------------------------------------------------

  const defaults = {
    domain: (location.hostname && !isIp(location.hostname) && location.hostname !== 'localhost') ? location.hostname : '',
    wsUrl: (location.protocol === 'https:' ? 'wss://' : 'ws://') + (location.host || 'localhost:8080') + '/',
  };

  /** The server's own domains (config.json): the page's host name when it is one of them. */
  async function serverDomains() {
    try {
      const r = await fetch('config.json', { cache: 'no-cache' });
      if (!r.ok) return [];
      const data = await r.json();
      return Array.isArray(data.domains) ? data.domains : [];
    } catch (e) { return []; }
  }

  // -- targets ------------------------------------------------------------------------------

  /** A SIP URI for what a person typed or a link carried, or null. */
  function targetUri(text, domain) {
    let t = String(text || '').trim();
    if (!t) return null;
    const link = /^(?:web\+)?reticulum:(?:\/\/)?(?:call)?\??(.*)$/i.exec(t);
    if (link) t = decodeURIComponent(link[1]).trim();
    if (/^tel:/i.test(t)) t = t.slice(4).replace(/[\s().-]/g, '');
    if (!/^sips?:/i.test(t)) {
      if (/^[+\d][\d\s().-]*$/.test(t)) t = t.replace(/[\s().-]/g, '');
      t = 'sip:' + (t.includes('@') ? t : t + '@' + domain);
    }
    const uri = window.JsSIP && window.JsSIP.URI.parse(t);
    return uri && uri.user ? uri.toString() : null;
  }

  function nameOf(uriText) {
    const uri = window.JsSIP && window.JsSIP.URI.parse(uriText);
    return uri ? (uri.user || uri.host) : uriText;
  }

  function shortUri(uriText, domain) {
    const uri = window.JsSIP && window.JsSIP.URI.parse(uriText);
    if (!uri) return uriText;
    return uri.host === domain ? uri.user : uri.user + '@' + uri.host;
  }

  // -- words a person understands ----------------------------------------------------------

  function registrationProblem(e) {
    const code = e && e.response ? e.response.status_code : 0;
    const C = JsSIP.C.causes;
    if (code === 401 || code === 407 || (e && e.cause === C.AUTHENTICATION_ERROR)) {
      return 'Wrong user name or password.';
    }
    if (code === 403) return 'The server refused this account. After several wrong passwords it waits a few minutes: check them and try again later.';
    if (code === 404) return 'The server does not know this domain. Check the domain under Server settings.';
    if (e && e.cause === C.CONNECTION_ERROR) return 'Server unreachable: the connection to the phone server failed.';
    if (e && e.cause === C.REQUEST_TIMEOUT) return 'The server did not answer. Try again in a moment.';
    if (code >= 500) return 'The server had a problem (' + code + '). Try again in a moment.';
    return 'Sign-in failed' + (code ? ' (' + code + ' ' + (e.response.reason_phrase || '') + ')' : '') + '.';
  }

  function callProblem(e, who) {
    const C = JsSIP.C.causes;
    switch (e && e.cause) {
      case C.BUSY: return who + ' is busy.';
      case C.REJECTED: return who + ' declined the call.';
      case C.NOT_FOUND: return 'There is nobody called ' + who + ' here.';
      case C.UNAVAILABLE: return who + ' is not available right now.';
      case C.NO_ANSWER: return 'No answer.';
      case C.CANCELED: return 'Call cancelled.';
      case C.ADDRESS_INCOMPLETE: return 'That address is incomplete.';
      case C.INCOMPATIBLE_SDP: case C.MISSING_SDP: case C.BAD_MEDIA_DESCRIPTION:
        return 'The two phones could not agree on audio.';
      case C.USER_DENIED_MEDIA_ACCESS: return 'The browser did not give this page the microphone. Allow it and call again.';
      case C.WEBRTC_ERROR: return 'The browser could not start the audio.';
      case C.CONNECTION_ERROR: return 'Server unreachable: the call could not be placed.';
      case C.REQUEST_TIMEOUT: return 'The server did not answer.';
      case C.AUTHENTICATION_ERROR: return 'The server did not accept this account for calls.';
      case C.RTP_TIMEOUT: return 'The audio stopped: call ended.';
      case C.BYE: return 'Call ended.';
      default: {
        const code = e && e.message && e.message.status_code;
        return 'The call failed' + (code ? ' (' + code + ' ' + (e.message.reason_phrase || '') + ')' : '') + '.';
      }
    }
  }

  // -- sounds (WebAudio: no audio files) ----------------------------------------------------

  const sound = {
    ctx: null,
    timer: null,
    playing: '',  // 'ring', 'ringback' or ''

    unlock() {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      if (!Ctx) return;
      if (!this.ctx) this.ctx = new Ctx();
      if (this.ctx.state === 'suspended') this.ctx.resume().catch(() => {});
    },
    note(freq, start, length, volume) {
      const ctx = this.ctx;
      const osc = ctx.createOscillator();
      const gain = ctx.createGain();
      osc.type = 'sine';
      osc.frequency.value = freq;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(volume, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + length);
      osc.connect(gain).connect(ctx.destination);
      osc.start(start);
      osc.stop(start + length + 0.05);
    },
    /** incoming call: a two-note chime every three seconds */
    ring() {
      this.stop();
      this.unlock();
      if (!this.ctx) return;
      const once = () => {
        const t = this.ctx.currentTime + 0.05;
        this.note(659.25, t, 0.6, 0.25);
        this.note(523.25, t + 0.45, 0.9, 0.25);
        this.note(659.25, t + 1.2, 0.6, 0.2);
        this.note(523.25, t + 1.65, 0.9, 0.2);
      };
      once();
      this.timer = setInterval(once, 3000);
      this.playing = 'ring';
    },
    /** outgoing call, callee ringing: a soft 425 Hz tone, one second in four */
    ringback() {
      this.stop();
      this.unlock();
      if (!this.ctx) return;
      const once = () => this.note(425, this.ctx.currentTime + 0.05, 1.0, 0.08);
      once();
      this.timer = setInterval(once, 4000);
      this.playing = 'ringback';
    },
    stop() {
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      this.playing = '';
    },
  };

  // -- history and messages, kept in this browser -----------------------------------------

  const HISTORY_MAX = 100;
  const MESSAGES_MAX = 200;

  const history = {
    key: () => 'history.' + phone.aor,
    all() { return store.get(this.key(), []); },
    add(entry) {
      const list = this.all();
      list.unshift(entry);
      store.set(this.key(), list.slice(0, HISTORY_MAX));
      renderHistory();
    },
    update(id, changes) {
      const list = this.all();
      const e = list.find((x) => x.id === id);
      if (e) Object.assign(e, changes);
      store.set(this.key(), list);
      renderHistory();
    },
    clear() { store.remove(this.key()); renderHistory(); },
  };

  const messages = {
    key: () => 'messages.' + phone.aor,
    all() { return store.get(this.key(), {}); },
    add(peer, entry) {
      const all = this.all();
      const list = (all[peer] = all[peer] || []);
      list.push(entry);
      all[peer] = list.slice(-MESSAGES_MAX);
      store.set(this.key(), all);
    },
  };

  // -- the phone ----------------------------------------------------------------------------

  const phone = {
    ua: null,
    aor: '',
    domain: '',
    wsUrl: '',
    registered: false,
    everRegistered: false,
    session: null,       // the call on screen
    incoming: null,      // a call ringing here, not answered yet
    pendingCall: null,   // a ?call= target, dialled once registered
    historyId: null,
    startedAt: 0,
    tick: null,
    autoHangup: null,
    muted: false,
    peer: '',
    kiosk: null,         // { target, hangupAfter } in kiosk mode
  };
  window.webphone = phone; // for people debugging, and for the browser tests
  phone.targetUri = (text) => targetUri(text, phone.domain);
  phone.sound = sound;

  function setStatus(text, level) {
    const s = $('status');
    s.textContent = text;
    s.dataset.level = level;
  }

  function notify(text) {
    const n = $('notice');
    n.textContent = text || '';
    show(n, !!text);
  }

  function signIn(settings) {
    if (!window.JsSIP) {
      notify('The phone\'s SIP library (jssip.min.js) is missing on the server: run ./run.sh there once with npm installed.');
      return;
    }
    stopUa();
    notify('');
    sound.unlock();
    phone.domain = settings.domain;
    phone.wsUrl = settings.wsUrl;
    phone.aor = settings.user + '@' + settings.domain;
    phone.everRegistered = false;
    let socket;
    try {
      socket = new JsSIP.WebSocketInterface(settings.wsUrl);
    } catch (e) {
      failSignIn('That WebSocket address is not valid: ' + settings.wsUrl);
      return;
    }
    let ua;
    try {
      ua = new JsSIP.UA({
        sockets: [socket],
        uri: 'sip:' + settings.user + '@' + settings.domain,
        authorization_user: settings.user,
        password: settings.password,
        register: true,
        register_expires: 600,
        session_timers: false,
        user_agent: 'Reticulum webphone (JsSIP ' + JsSIP.version + ')',
        connection_recovery_min_interval: 2,
        connection_recovery_max_interval: 30,
      });
    } catch (e) {
      failSignIn('Check the user name and the domain: ' + (e.message || e));
      return;
    }
    phone.ua = ua;
    setStatus('Connecting…', 'busy');
    $('signin-button').disabled = true;

    ua.on('connected', () => setStatus(phone.registered ? 'Signed in' : 'Signing in…', 'busy'));
    ua.on('disconnected', (e) => {
      phone.registered = false;
      if (phone.ua !== ua) return;
      if (!phone.everRegistered) {
        failSignIn('Server unreachable: no answer from ' + settings.wsUrl + '. Check that the server runs and the address under Server settings.');
      } else {
        setStatus('Connection lost: reconnecting…', 'error');
      }
    });
    ua.on('registered', () => {
      if (phone.ua !== ua) return;
      phone.registered = true;
      const first = !phone.everRegistered;
      phone.everRegistered = true;
      setStatus('Signed in as ' + phone.aor, 'ok');
      $('signin-button').disabled = false;
      if (first) signedIn(settings);
    });
    ua.on('unregistered', () => {
      phone.registered = false;
      if (phone.ua === ua) setStatus('Signed out', 'off');
    });
    ua.on('registrationFailed', (e) => {
      if (phone.ua !== ua) return;
      phone.registered = false;
      if (!phone.everRegistered) {
        failSignIn(registrationProblem(e));
      } else {
        setStatus('Not registered: ' + registrationProblem(e), 'error');
      }
    });
    ua.on('newRTCSession', (e) => newSession(e.session, e.originator));
    ua.on('newMessage', (e) => {
      if (e.originator !== 'remote') return;
      const from = e.request.from.uri.toString();
      const name = e.request.from.display_name || nameOf(from);
      receiveMessage(from, name, e.request.body || '');
    });
    ua.start();
  }

  function stopUa() {
    const ua = phone.ua;
    phone.ua = null;
    phone.registered = false;
    if (ua) {
      try { ua.stop(); } catch (e) { /* already stopped */ }
    }
  }

  function failSignIn(text) {
    stopUa();
    $('signin-button').disabled = false;
    setStatus('Not signed in', 'error');
    notify(text);
    if (phone.kiosk) {
      showKioskState(text);
    }
    show($('signin'), true);
    show($('phone'), false);
    if (phone.kiosk) show($('kiosk'), false);
    $('password').focus();
  }

  function signedIn(settings) {
    notify('');
    show($('signin'), false);
    if (phone.kiosk) {
      store.set('kiosk', settings);
      show($('kiosk'), true);
      showKioskState('');
      $('kiosk-call').focus();
    } else {
      const saved = { user: settings.user, domain: settings.domain, wsUrl: settings.wsUrl };
      if (settings.remember) saved.password = settings.password;
      store.set('account', saved);
      $('me').textContent = phone.aor;
      show($('phone'), true);
      renderHistory();
      renderConversations();
      $('target').focus();
    }
    registerLinks();
    if (phone.pendingCall) {
      const target = phone.pendingCall;
      phone.pendingCall = null;
      // a reload must not dial again
      query.delete('call');
      replaceAddress();
      dial(target);
    }
  }

  function replaceAddress() {
    const rest = query.toString();
    window.history.replaceState(null, '', location.pathname + (rest ? '?' + rest : ''));
  }

  function signOut() {
    const ua = phone.ua;
    if (phone.session) hangUp();
    if (ua) {
      ua.unregister({ all: false });
      setTimeout(() => { if (phone.ua === ua) stopUa(); }, 1500);
    }
    store.remove('account');
    phone.registered = false;
    setStatus('Signed out', 'off');
    show($('phone'), false);
    show($('signin'), true);
    $('password').value = '';
    $('user').focus();
  }

  /** web+reticulum: (and sip: where allowed) links open this page, which dials them. */
  function registerLinks() {
    if (!navigator.registerProtocolHandler || !window.isSecureContext) return;
    const base = location.origin + location.pathname + '?' +
      (phone.kiosk ? 'kiosk=' + encodeURIComponent(phone.kiosk.target) + '&' : '') + 'call=%s';
    for (const scheme of ['web+reticulum', 'sip']) {
      try { navigator.registerProtocolHandler(scheme, base, 'Reticulum phone'); } catch (e) { /* refused */ }
    }
  }

  // -- calls --------------------------------------------------------------------------------

  const MEDIA = { audio: true, video: false };
  const PC_CONFIG = { iceServers: [] }; // a LAN needs no STUN, and there is no internet to ask

  function dial(text) {
    if (!phone.ua || !phone.registered) {
      phone.pendingCall = text;
      return;
    }
    if (phone.session || phone.incoming) {
      notify('Finish the current call first.');
      return;
    }
    const uri = targetUri(text, phone.domain);
    if (!uri) {
      notify('"' + text + '" is not a name or SIP address.');
      return;
    }
    notify('');
    sound.unlock();
    try {
      phone.ua.call(uri, { mediaConstraints: MEDIA, pcConfig: PC_CONFIG, rtcOfferConstraints: { offerToReceiveAudio: true, offerToReceiveVideo: false } });
    } catch (e) {
      notify('The call could not start: ' + (e.message || e));
    }
  }

  function newSession(session, originator) {
    const peerUri = session.remote_identity.uri.toString();
    const peerName = session.remote_identity.display_name || nameOf(peerUri);
    if (originator === 'remote' && (phone.session || phone.incoming || phone.kiosk)) {
      session.terminate({ status_code: 486, reason_phrase: 'Busy Here' });
      history.add({ id: Date.now() + Math.random(), dir: 'in', peer: peerUri, name: peerName, time: Date.now(), result: 'missed (busy)', duration: 0 });
      return;
    }
    const id = Date.now() + Math.random();
    history.add({ id, dir: originator === 'remote' ? 'in' : 'out', peer: peerUri, name: peerName, time: Date.now(), result: originator === 'remote' ? 'ringing' : 'calling', duration: 0 });
    const entry = { id, answered: false };

    session.on('peerconnection', (e) => attachAudio(e.peerconnection));
    session.on('progress', (e) => {
      if (session !== phone.session) return;
      if (originator === 'local') {
        setCallState('Ringing…');
        const early = e.response && e.response.body;
        if (!early) sound.ringback();
      }
    });
    session.on('accepted', () => {
      entry.answered = true;
      sound.stop();
      if (session.connection) attachAudio(session.connection);
      phone.startedAt = Date.now();
      setCallState('Connected');
      startTimer();
      history.update(id, { result: 'answered' });
    });
    session.on('confirmed', () => {
      if (session.connection) attachAudio(session.connection);
      if (!phone.startedAt) { phone.startedAt = Date.now(); startTimer(); }
      setCallState('Connected');
    });
    session.on('ended', (e) => finish(session, entry, e, peerName));
    session.on('failed', (e) => finish(session, entry, e, peerName));

    if (originator === 'remote') {
      phone.incoming = session;
      $('incoming-name').textContent = peerName;
      $('incoming-uri').textContent = peerUri.replace(/^sip:/, '');
      show($('incoming'), true);
      setTimeout(() => $('answer').focus(), 0);
      sound.ring();
      if (document.hidden && window.Notification && Notification.permission === 'granted') {
        try { new Notification('Call from ' + peerName); } catch (e) { /* not allowed here */ }
      }
    } else {
      showCall(session, peerName, peerUri, 'Calling ' + peerName + '…');
    }
  }

  function showCall(session, name, uri, state) {
    phone.session = session;
    phone.peer = name;
    phone.muted = false;
    phone.startedAt = 0;
    $('call-peer').textContent = name;
    $('call-uri').textContent = uri.replace(/^sip:/, '');
    $('call-timer').textContent = '0:00';
    $('mute').setAttribute('aria-pressed', 'false');
    $('mute').textContent = 'Mute';
    $('dtmf-sent').textContent = '';
    setCallState(state);
    show($('call'), true);
    show($('dial-form'), false);
    if (phone.kiosk) {
      $('kiosk-verb').textContent = 'Hang up';
      $('kiosk-call').classList.add('active');
      const after = phone.kiosk.hangupAfter;
      if (after > 0) {
        phone.autoHangup = setTimeout(() => {
          if (phone.session === session) {
            showKioskState('Time is up: hanging up.');
            hangUp();
          }
        }, after * 1000);
      }
    } else if (phone.hangupAfter > 0) {
      phone.autoHangup = setTimeout(() => { if (phone.session === session) hangUp(); }, phone.hangupAfter * 1000);
    }
    $('hangup').focus();
  }

  function setCallState(text) {
    $('call-state').textContent = text;
    if (phone.kiosk) showKioskState(text === 'Connected' ? 'Connected: speak now.' : text);
  }

  function startTimer() {
    clearInterval(phone.tick);
    const update = () => {
      $('call-timer').textContent = clock((Date.now() - phone.startedAt) / 1000);
    };
    update();
    phone.tick = setInterval(update, 1000);
  }

  function attachAudio(pc) {
    const audio = $('remote-audio');
    const useStream = () => {
      const tracks = pc.getReceivers().map((r) => r.track).filter((t) => t && t.kind === 'audio');
      if (tracks.length && (!audio.srcObject || audio.srcObject.getTracks()[0] !== tracks[0])) {
        audio.srcObject = new MediaStream(tracks);
        audio.play().catch(() => {});
      }
    };
    if (!pc.__reticulum) {
      pc.__reticulum = true;
      pc.addEventListener('track', (ev) => {
        if (ev.streams && ev.streams[0]) {
          audio.srcObject = ev.streams[0];
          audio.play().catch(() => {});
        } else {
          useStream();
        }
      });
    }
    useStream();
  }

  function finish(session, entry, e, name) {
    const wasIncoming = session === phone.incoming;
    const duration = phone.startedAt && session === phone.session ? Math.round((Date.now() - phone.startedAt) / 1000) : 0;
    let result;
    if (entry.answered) result = 'answered';
    else if (wasIncoming) result = e.originator === 'local' ? 'declined' : 'missed';
    else result = (e.cause === JsSIP.C.causes.CANCELED) ? 'cancelled' : 'not answered';
    history.update(entry.id, { result, duration });
    if (wasIncoming) {
      phone.incoming = null;
      show($('incoming'), false);
      sound.stop();
      return;
    }
    if (session !== phone.session) return;
    sound.stop();
    clearInterval(phone.tick);
    clearTimeout(phone.autoHangup);
    phone.session = null;
    phone.startedAt = 0;
    $('remote-audio').srcObject = null;
    const why = entry.answered ? (e.originator === 'local' ? 'Call ended.' : name + ' hung up.') : callProblem(e, name);
    setCallState(why);
    $('call').classList.add('ended');
    show($('keypad'), false);
    $('keypad-toggle').setAttribute('aria-expanded', 'false');
    setTimeout(() => {
      if (phone.session) return;
      $('call').classList.remove('ended');
      show($('call'), false);
      show($('dial-form'), true);
      if (!phone.kiosk) $('target').focus();
    }, 3000);
    if (phone.kiosk) {
      $('kiosk-verb').textContent = 'Call';
      $('kiosk-call').classList.remove('active');
      setTimeout(() => { if (!phone.session) showKioskState(''); }, 6000);
    }
  }

  function hangUp() {
    const s = phone.session;
    if (!s) return;
    try { s.terminate(); } catch (e) { /* already over */ }
  }

  function answer() {
    const s = phone.incoming;
    if (!s) return;
    sound.stop();
    phone.incoming = null;
    show($('incoming'), false);
    showCall(s, $('incoming-name').textContent, s.remote_identity.uri.toString(), 'Connecting…');
    try {
      s.answer({ mediaConstraints: MEDIA, pcConfig: PC_CONFIG });
    } catch (e) {
      setCallState('The call could not be answered: ' + (e.message || e));
    }
  }

  function reject() {
    const s = phone.incoming;
    if (!s) return;
    sound.stop();
    try { s.terminate({ status_code: 603, reason_phrase: 'Decline' }); } catch (e) { /* gone */ }
  }

  function toggleMute() {
    const s = phone.session;
    if (!s) return;
    phone.muted = !phone.muted;
    if (phone.muted) s.mute({ audio: true }); else s.unmute({ audio: true });
    $('mute').setAttribute('aria-pressed', String(phone.muted));
    $('mute').textContent = phone.muted ? 'Unmute' : 'Mute';
    setCallState(phone.muted ? 'Connected (your microphone is off)' : 'Connected');
  }

  function sendTone(key) {
    const s = phone.session;
    if (!s || !s.isEstablished()) return;
    try {
      // RFC 4733 telephone-events in the RTP stream
      s.sendDTMF(key, { transportType: JsSIP.C.DTMF_TRANSPORT.RFC2833, duration: 120, interToneGap: 70 });
      $('dtmf-sent').textContent = ($('dtmf-sent').textContent + key).slice(-24);
    } catch (e) {
      notify('Could not send the tone: ' + (e.message || e));
    }
  }

  function buildKeypad() {
    const letters = { 2: 'ABC', 3: 'DEF', 4: 'GHI', 5: 'JKL', 6: 'MNO', 7: 'PQRS', 8: 'TUV', 9: 'WXYZ' };
    for (const key of ['1', '2', '3', '4', '5', '6', '7', '8', '9', '*', '0', '#']) {
      const label = key === '*' ? 'star' : key === '#' ? 'pound' : key;
      $('keypad').append(el('button', { type: 'button', class: 'key', 'aria-label': 'Tone ' + label, onclick: () => sendTone(key) },
        key, el('small', { 'aria-hidden': 'true' }, letters[key] || '\u00a0')));
    }
  }

  // -- messages -----------------------------------------------------------------------------

  let openPeer = '';

  function receiveMessage(from, name, text) {
    messages.add(from, { dir: 'in', text, time: Date.now(), name });
    const onMessages = !$('panel-messages').hidden;
    if (!onMessages || openPeer !== from) {
      const u = $('unread');
      u.textContent = String((Number(u.textContent) || 0) + 1);
      u.setAttribute('aria-label', u.textContent + ' unread');
      show(u, true);
    }
    if (!openPeer || !onMessages) openConversation(from, false);
    else if (openPeer === from) renderMessages();
    renderConversations();
  }

  function openConversation(peer, focus) {
    openPeer = peer;
    $('msg-to').value = shortUri(peer, phone.domain);
    renderMessages();
    renderConversations();
    if (focus) $('msg-text').focus();
  }

  function renderConversations() {
    const box = $('conversations');
    box.textContent = '';
    const all = messages.all();
    const peers = Object.keys(all).sort((a, b) => all[b][all[b].length - 1].time - all[a][all[a].length - 1].time);
    for (const peer of peers) {
      const last = all[peer][all[peer].length - 1];
      box.append(el('button', {
        type: 'button', class: 'conversation' + (peer === openPeer ? ' open' : ''),
        'aria-current': peer === openPeer ? 'true' : 'false',
        onclick: () => openConversation(peer, true),
      }, el('strong', {}, shortUri(peer, phone.domain)), el('span', {}, last.text.slice(0, 40))));
    }
  }

  function renderMessages() {
    const log = $('msg-log');
    log.textContent = '';
    const list = (messages.all()[openPeer] || []);
    for (const m of list) {
      log.append(el('li', { class: 'bubble ' + m.dir + (m.failed ? ' failed' : '') },
        el('span', { class: 'text' }, m.text),
        el('time', { datetime: new Date(m.time).toISOString() }, when(m.time) + (m.failed ? ' · not delivered' : ''))));
    }
    log.scrollTop = log.scrollHeight;
  }

  function sendMessage(toText, text) {
    if (!phone.ua || !phone.registered) { notify('Sign in first.'); return; }
    const uri = targetUri(toText, phone.domain);
    if (!uri) { notify('"' + toText + '" is not a name or SIP address.'); return; }
    if (!text.trim()) return;
    notify('');
    openPeer = uri;
    const entry = { dir: 'out', text, time: Date.now() };
    messages.add(uri, entry);
    renderMessages();
    renderConversations();
    phone.ua.sendMessage(uri, text, {
      eventHandlers: {
        failed: (e) => {
          const all = messages.all();
          const m = (all[uri] || []).find((x) => x.time === entry.time && x.text === text && x.dir === 'out');
          if (m) { m.failed = true; store.set(messages.key(), all); }
          renderMessages();
          notify('Message not delivered: ' + callProblem(e, nameOf(uri)));
        },
      },
    });
  }

  // -- history ------------------------------------------------------------------------------

  function renderHistory() {
    const list = $('history-list');
    list.textContent = '';
    const all = phone.aor ? history.all() : [];
    show($('history-empty'), all.length === 0);
    for (const h of all) {
      const arrow = h.dir === 'in' ? '↙' : '↗';
      const detail = h.result + (h.duration ? ' · ' + clock(h.duration) : '');
      list.append(el('li', { class: 'entry ' + h.dir + (/missed|not answered/.test(h.result) ? ' missed' : '') },
        el('span', { class: 'dir', 'aria-label': h.dir === 'in' ? 'incoming' : 'outgoing' }, arrow),
        el('span', { class: 'who' }, el('strong', {}, h.name), el('small', {}, when(h.time) + ' · ' + detail)),
        el('button', { type: 'button', class: 'round small call', 'aria-label': 'Call ' + h.name, onclick: () => { selectTab('dial'); dial(h.peer); } }, 'Call')));
    }
  }

  // -- tabs (WAI-ARIA tabs pattern: arrows move between them) --------------------------

  const TABS = ['dial', 'messages', 'history'];

  function selectTab(name) {
    for (const t of TABS) {
      const on = t === name;
      $('tab-' + t).setAttribute('aria-selected', String(on));
      $('tab-' + t).tabIndex = on ? 0 : -1;
      show($('panel-' + t), on);
    }
    if (name === 'messages') {
      show($('unread'), false);
      $('unread').textContent = '';
      renderConversations();
      renderMessages();
    }
    if (name === 'history') renderHistory();
  }

  // -- kiosk --------------------------------------------------------------------------------

  function showKioskState(text) {
    $('kiosk-state').textContent = text || (phone.registered ? 'Press the button to ring.' : '');
  }

  // -- start --------------------------------------------------------------------------------

  async function start() {
    buildKeypad();
    const domains = await serverDomains();
    if (!defaults.domain || (domains.length && !domains.includes(defaults.domain))) {
      defaults.domain = domains[0] || defaults.domain || 'reticulum.local';
    }
    const kioskTarget = query.get('kiosk');
    const hangupParam = Number(param('hangup'));
    phone.hangupAfter = hangupParam > 0 ? hangupParam : 0;
    if (param('call')) phone.pendingCall = param('call');

    if (!window.JsSIP) {
      notify('The phone\'s SIP library (jssip.min.js) is missing on the server: run ./run.sh there once with npm installed.');
    } else if (!window.isSecureContext) {
      notify('This page is not a secure context, so the browser will not lend it the microphone. Open it over https:// (see the README) or on http://localhost.');
    }

    let saved = store.get(kioskTarget ? 'kiosk' : 'account', null) || {};
    const settings = {
      user: param('user') || saved.user || (kioskTarget ? 'door' : ''),
      password: param('password') || saved.password || '',
      domain: param('domain') || saved.domain || defaults.domain,
      wsUrl: param('ws') || saved.wsUrl || defaults.wsUrl,
      remember: !!(param('password') || saved.password),
    };
    $('user').value = settings.user;
    $('password').value = settings.password;
    $('domain').value = settings.domain;
    $('ws-url').value = settings.wsUrl;
    $('remember').checked = settings.remember;

    if (kioskTarget) {
      document.body.classList.add('kiosk-mode');
      const target = targetUri(kioskTarget, settings.domain) || kioskTarget;
      phone.kiosk = { target, hangupAfter: hangupParam > 0 ? hangupParam : 60 };
      $('kiosk-target').textContent = nameOf(target);
      $('kiosk-call').setAttribute('aria-label', 'Call ' + nameOf(target));
      $('signin-title').textContent = 'Door phone: sign in';
      $('remember').checked = true;
      // credentials in the address would stay in the history: take them out
      if (query.has('user') || query.has('password') || fragment.has('password')) {
        query.delete('user');
        query.delete('password');
        window.history.replaceState(null, '', location.pathname + '?' + query.toString());
      }
    }

    show($('signin'), true);
    if (settings.user && settings.password) {
      signIn(settings);
    } else {
      (settings.user ? $('password') : $('user')).focus();
    }
  }

  function wire() {
    $('signin-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const user = $('user').value.trim();
      const password = $('password').value;
      if (!user || !password) {
        notify(!user ? 'Enter your user name.' : 'Enter your password.');
        (!user ? $('user') : $('password')).focus();
        return;
      }
      signIn({
        user,
        password,
        domain: $('domain').value.trim() || defaults.domain,
        wsUrl: $('ws-url').value.trim() || defaults.wsUrl,
        remember: $('remember').checked || !!phone.kiosk,
      });
    });
    $('dial-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const t = $('target').value.trim();
      if (t) dial(t);
      else $('target').focus();
    });
    $('hangup').addEventListener('click', hangUp);
    $('mute').addEventListener('click', toggleMute);
    $('keypad-toggle').addEventListener('click', () => {
      const open = $('keypad').hidden;
      show($('keypad'), open);
      $('keypad-toggle').setAttribute('aria-expanded', String(open));
    });
    $('answer').addEventListener('click', answer);
    $('reject').addEventListener('click', reject);
    $('signout').addEventListener('click', signOut);
    $('history-clear').addEventListener('click', () => history.clear());
    $('msg-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const text = $('msg-text').value;
      sendMessage($('msg-to').value, text);
      $('msg-text').value = '';
      $('msg-text').focus();
    });
    $('msg-to').addEventListener('change', () => {
      const uri = targetUri($('msg-to').value, phone.domain);
      if (uri) { openPeer = uri; renderMessages(); renderConversations(); }
    });
    $('kiosk-call').addEventListener('click', () => {
      sound.unlock();
      if (phone.session) hangUp();
      else if (phone.kiosk) dial(phone.kiosk.target);
    });
    TABS.forEach((name, i) => {
      const tab = $('tab-' + name);
      tab.addEventListener('click', () => selectTab(name));
      tab.addEventListener('keydown', (ev) => {
        const step = ev.key === 'ArrowRight' ? 1 : ev.key === 'ArrowLeft' ? -1 : 0;
        if (!step) return;
        const next = TABS[(i + step + TABS.length) % TABS.length];
        selectTab(next);
        $('tab-' + next).focus();
      });
    });
    document.addEventListener('keydown', (ev) => {
      // during a call, digits typed anywhere but in a text field send tones
      const inField = ev.target && (ev.target.tagName === 'INPUT' || ev.target.tagName === 'TEXTAREA');
      if (!inField && phone.session && /^[0-9*#]$/.test(ev.key)) sendTone(ev.key);
      if (ev.key === 'Escape' && phone.incoming) reject();
    });
    document.addEventListener('pointerdown', () => sound.unlock(), { once: true });
    window.addEventListener('beforeunload', () => {
      if (phone.ua) { try { phone.ua.stop(); } catch (e) { /* closing anyway */ } }
    });
  }

  wire();
  start();
})();
