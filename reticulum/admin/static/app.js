// Reticulum's admin page: one WebSocket (/events) feeds every table and the ladder.
// The snapshot sent on connect replaces what the page holds; each event then updates it.
'use strict';

(function () {
  const MAX_MESSAGES = 2000;
  const KEEP_ENDED_MS = 60000;

  const state = {
    registrations: new Map(), // aor + contact -> registration (expiresAt in ms)
    connections: new Map(), // conn id -> connection
    dialogs: new Map(), // call_id + from + to -> dialog
    messages: [],
    counters: {},
    selected: '',
    selectedArrow: -1,
    connectedAt: 0,
    connects: 0, // WebSocket openings (reconnections included)
  };

  const $ = (id) => document.getElementById(id);

  // -- the token: #token=, then the cookie the sign-in page set, else ask

  function readToken() {
    const hash = new URLSearchParams(location.hash.slice(1)).get('token');
    if (hash) return hash;
    const query = new URLSearchParams(location.search).get('token');
    if (query) return query;
    const cookie = document.cookie.match(/(?:^|; )reticulum_admin=([^;]*)/);
    if (cookie && cookie[1]) return decodeURIComponent(cookie[1]);
    return (window.prompt('Admin token') || '').trim();
  }
  const token = readToken();

  // -- helpers

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v;
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function userOf(uri) {
    if (!uri) return '?';
    const rest = uri.replace(/^sips?:/, '');
    return rest.split(/[@;]/)[0];
  }

  function seconds(s) {
    if (s < 0) s = 0;
    if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + String(Math.floor(s % 60)).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' min';
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toLocaleTimeString([], { hour12: false }) + '.' +
      String(d.getMilliseconds()).padStart(3, '0');
  }

  function label(m) {
    return m.status == null ? m.method : m.status + ' ' + (m.reason || '');
  }

  function tagClass(m) {
    return m.status == null ? 'req' : 's' + Math.floor(m.status / 100);
  }

  function rows(tbody, items, render, emptyText, columns) {
    tbody.replaceChildren();
    if (!items.length) {
      tbody.append(el('tr', { class: 'empty' }, el('td', { colspan: columns }, emptyText)));
      return;
    }
    for (const item of items) tbody.append(render(item));
  }

  // -- state from events

  function regKey(r) { return r.aor + ' ' + r.contact; }
  function dialogKey(d) { return d.call_id + ' ' + d.from + ' ' + d.to; }

  function applySnapshot(s) {
    const now = Date.now();
    state.registrations.clear();
    for (const r of s.registrations) {
      state.registrations.set(regKey(r), Object.assign({}, r, { expiresAt: now + r.expires * 1000 }));
    }
    state.connections.clear();
    for (const c of s.connections) state.connections.set(c.conn, c);
    state.dialogs.clear();
    for (const d of s.dialogs) state.dialogs.set(dialogKey(d), Object.assign({ seenAt: now }, d));
    state.messages = s.messages.slice(-MAX_MESSAGES);
    state.counters = s.counters || {};
    $('version').textContent = s.version ? 'v' + s.version : '';
    renderAll();
  }

  function applyEvent(e) {
    const now = Date.now();
    switch (e.type) {
      case 'message':
        state.messages.push(e);
        if (state.messages.length > MAX_MESSAGES) state.messages.splice(0, state.messages.length - MAX_MESSAGES);
        state.counters[e.direction === 'in' ? 'messages_in' : 'messages_out'] =
          (state.counters[e.direction === 'in' ? 'messages_in' : 'messages_out'] || 0) + 1;
        scheduleRender('messages');
        if (e.call_id === state.selected) scheduleRender('ladder');
        noteCallId(e.call_id);
        break;
      case 'registration':
        if (e.action === 'added' || e.action === 'refreshed') {
          state.registrations.set(regKey(e), Object.assign({}, e, { expiresAt: now + e.expires * 1000, fresh: true }));
        } else {
          state.registrations.delete(regKey(e));
        }
        scheduleRender('registrations');
        break;
      case 'connection':
        if (e.action === 'opened') state.connections.set(e.conn, e);
        else state.connections.delete(e.conn);
        scheduleRender('connections');
        break;
      case 'dialog':
        state.dialogs.set(dialogKey(e), Object.assign({ seenAt: now }, e, { endedAt: e.action === 'terminated' ? now : 0 }));
        scheduleRender('dialogs');
        break;
      case 'dropped':
        state.counters.events_dropped = (state.counters.events_dropped || 0) + e.count;
        break;
      default:
        break;
    }
    scheduleRender('counters');
  }

  // -- rendering (batched per animation frame)

  const dirty = new Set();
  let frame = 0;
  function scheduleRender(what) {
    dirty.add(what);
    if (!frame) frame = requestAnimationFrame(flush);
  }
  function flush() {
    frame = 0;
    const what = Array.from(dirty);
    dirty.clear();
    for (const w of what) renderers[w]();
  }
  function renderAll() { for (const w of Object.keys(renderers)) renderers[w](); }

  const renderers = {
    counters() {
      const c = state.counters;
      const chips = [
        ['registrations', state.registrations.size],
        ['dialogs', Array.from(state.dialogs.values()).filter((d) => d.state !== 'terminated').length],
        ['connections', state.connections.size],
        ['in', c.messages_in || 0],
        ['out', c.messages_out || 0],
        ['auth failures', c.auth_failures || 0],
        ['dropped', c.events_dropped || 0],
      ];
      $('counters').replaceChildren(...chips.map(([k, v]) => el('span', { class: 'chip' }, k, el('b', {}, v))));
    },

    registrations() {
      const now = Date.now();
      const items = Array.from(state.registrations.values()).sort((a, b) => regKey(a).localeCompare(regKey(b)));
      $('registrations-count').textContent = items.length;
      rows($('registrations').tBodies[0], items, (r) => {
        const row = el('tr', { 'data-aor': r.aor, class: r.fresh ? 'fresh' : '' },
          el('td', {}, el('b', {}, userOf(r.aor))),
          el('td', { class: 'mono', title: r.contact }, r.contact),
          el('td', { class: 'mono' }, r.flow ? r.flow.transport + ' ' + r.flow.remote : '—'),
          el('td', { class: 'mono expires', 'data-at': r.expiresAt }, seconds((r.expiresAt - now) / 1000)),
          el('td', { class: 'dim', title: r.user_agent || '' }, r.user_agent || '—'));
        r.fresh = false;
        return row;
      }, 'nobody is registered', 5);
    },

    connections() {
      const items = Array.from(state.connections.values()).sort((a, b) => a.conn - b.conn);
      $('connections-count').textContent = items.length;
      rows($('connections').tBodies[0], items, (c) => el('tr', {},
        el('td', { class: 'mono dim' }, c.conn),
        el('td', {}, el('span', { class: 'tag req' }, c.transport)),
        el('td', { class: 'mono' }, c.remote),
        el('td', { class: 'mono dim' }, c.local)), 'no open connections', 4);
    },

    dialogs() {
      const now = Date.now();
      for (const [k, d] of state.dialogs) {
        if (d.endedAt && now - d.endedAt > KEEP_ENDED_MS) state.dialogs.delete(k);
      }
      const items = Array.from(state.dialogs.values()).sort((a, b) => b.created - a.created);
      $('dialogs-count').textContent = items.filter((d) => d.state !== 'terminated').length;
      rows($('dialogs').tBodies[0], items, (d) => {
        let duration = d.duration || 0;
        if (d.state === 'confirmed') duration += (now - d.seenAt) / 1000;
        return el('tr', { class: 'clickable' + (d.call_id === state.selected ? ' selected' : ''),
                          onclick: () => select(d.call_id) },
          el('td', {}, userOf(d.from)),
          el('td', {}, userOf(d.to)),
          el('td', {}, el('span', { class: 'tag ' + d.state }, d.state)),
          el('td', { class: 'mono' }, d.state === 'early' ? '—' : seconds(duration)),
          el('td', { class: 'mono dim', title: d.call_id }, d.call_id));
      }, 'no calls', 5);
    },

    messages() {
      const filter = $('message-filter').value.trim().toLowerCase();
      let items = state.messages;
      if (filter) {
        items = items.filter((m) => [m.method, String(m.status || ''), m.from, m.to, m.call_id, m.remote]
          .some((v) => v && String(v).toLowerCase().includes(filter)));
      }
      items = items.slice(-200).reverse();
      $('messages-count').textContent = state.messages.length;
      rows($('messages').tBodies[0], items, (m) => el('tr', {
        class: 'clickable' + (m.call_id === state.selected ? ' selected' : ''),
        onclick: () => select(m.call_id, state.messages.indexOf(m)) },
      el('td', { class: 'mono dim' }, clock(m.time)),
      el('td', { class: 'dir ' + m.direction }, m.direction === 'in' ? '⟵ in' : 'out ⟶'),
      el('td', {}, el('span', { class: 'tag ' + tagClass(m) }, label(m))),
      el('td', { class: 'mono' }, m.transport + ' ' + m.remote),
      el('td', {}, userOf(m.from) + ' → ' + userOf(m.to)),
      el('td', { class: 'mono dim', title: m.call_id }, m.call_id)), 'no messages yet', 6);
    },

    ladder() { drawLadder(); },
  };

  // -- call selection

  const knownCalls = new Set();
  function noteCallId(callId) {
    if (!callId || knownCalls.has(callId)) return;
    knownCalls.add(callId);
    const option = el('option', { value: callId }, callId);
    const selectBox = $('call-select');
    selectBox.insertBefore(option, selectBox.options[1] || null);
  }

  function select(callId, messageIndex) {
    state.selected = callId || '';
    $('call-select').value = state.selected;
    state.selectedArrow = -1;
    if (messageIndex !== undefined) {
      const ofCall = state.messages.filter((m) => m.call_id === callId);
      state.selectedArrow = ofCall.indexOf(state.messages[messageIndex]);
    }
    renderers.messages();
    renderers.dialogs();
    drawLadder();
    if (state.selectedArrow >= 0) showRaw(state.messages.filter((m) => m.call_id === callId)[state.selectedArrow]);
    else $('raw-wrap').hidden = true;
  }

  $('call-select').addEventListener('change', (e) => select(e.target.value));
  $('message-filter').addEventListener('input', () => renderers.messages());
  $('raw-close').addEventListener('click', () => {
    $('raw-wrap').hidden = true;
    state.selectedArrow = -1;
    drawLadder();
  });

  function showRaw(m) {
    if (!m) return;
    $('raw-title').textContent = clock(m.time) + '  ' + (m.direction === 'in' ? 'received from ' : 'sent to ') +
      m.transport + ' ' + m.remote + (m.truncated ? '  (cut)' : '');
    $('raw').textContent = m.raw;
    $('raw-wrap').hidden = false;
  }

  // -- the ladder: one column per host, one arrow per message, in time order

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function arrowColor(m) {
    if (m.status == null) return '#3557d6';
    if (m.status < 200) return '#8a93a6';
    if (m.status < 300) return '#1f9d55';
    if (m.status < 400) return '#c98a00';
    return '#cf3b3b';
  }

  function drawLadder() {
    const box = $('ladder');
    box.replaceChildren();
    const messages = state.messages.filter((m) => m.call_id === state.selected);
    $('ladder-hint').hidden = messages.length > 0;
    if (!messages.length) { box.setAttribute('width', 0); box.setAttribute('height', 0); return; }

    // the hosts: the first peer (the caller) left of the server, the others right of it
    const server = messages[0].local;
    const peers = [];
    for (const m of messages) if (!peers.includes(m.remote)) peers.push(m.remote);
    const hosts = [peers[0], 'reticulum', ...peers.slice(1)];
    const colWidth = 270;
    const left = 40;
    const top = 58;
    const step = 34;
    const x = (host) => left + colWidth / 2 + hosts.indexOf(host) * colWidth;
    const width = left * 2 + colWidth * hosts.length;
    const height = top + step * messages.length + 30;
    box.setAttribute('width', width);
    box.setAttribute('height', height);
    box.setAttribute('viewBox', '0 0 ' + width + ' ' + height);

    const defs = svg('defs');
    for (const color of ['#3557d6', '#8a93a6', '#1f9d55', '#c98a00', '#cf3b3b']) {
      const marker = svg('marker', { id: 'head' + color.slice(1), viewBox: '0 0 10 10', refX: 9, refY: 5,
        markerWidth: 10, markerHeight: 10, markerUnits: 'userSpaceOnUse', orient: 'auto-start-reverse' });
      marker.append(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: color }));
      defs.append(marker);
    }
    box.append(defs);

    for (const host of hosts) {
      const cx = x(host);
      const isServer = host === 'reticulum';
      box.append(svg('line', { class: 'lifeline', x1: cx, y1: top - 12, x2: cx, y2: height - 10 }));
      box.append(svg('rect', { class: 'host-box' + (isServer ? ' server' : ''), x: cx - 95, y: 8, width: 190,
        height: 34, rx: 8 }));
      const name = isServer ? 'Reticulum' : (whoIs(host, messages) || host);
      box.append(svg('text', { class: 'host-label' + (isServer ? ' server' : ''), x: cx, y: isServer ? 24 : 22,
        'text-anchor': 'middle' }, name));
      box.append(svg('text', { class: 'host-sub', x: cx, y: 36, 'text-anchor': 'middle',
        fill: isServer ? '#a9b4cf' : undefined }, isServer ? server : (name === host ? '' : host)));
    }

    const t0 = messages[0].time;
    messages.forEach((m, i) => {
      const y = top + step * i + 14;
      const peer = x(m.remote);
      const me = x('reticulum');
      const [x1, x2] = m.direction === 'in' ? [peer, me] : [me, peer];
      const color = arrowColor(m);
      const g = svg('g', { class: 'arrow' + (i === state.selectedArrow ? ' selected' : ''),
        'data-index': i });
      g.append(svg('line', { class: 'shaft', x1, y1: y, x2: x2 + (x2 > x1 ? -2 : 2), y2: y, stroke: color,
        'marker-end': 'url(#head' + color.slice(1) + ')' }));
      g.append(svg('text', { class: 'label', x: (x1 + x2) / 2, y: y - 6, 'text-anchor': 'middle', fill: color },
        label(m).trim() + (m.status == null ? '' : ' (' + m.cseq.split(' ')[1] + ')')));
      g.append(svg('text', { class: 'time', x: left - 30, y: y + 4 }, '+' + (m.time - t0).toFixed(3)));
      g.append(svg('line', { class: 'hit', x1, y1: y, x2, y2: y }));
      g.addEventListener('click', () => {
        state.selectedArrow = i;
        drawLadder();
        showRaw(m);
      });
      box.append(g);
    });
  }

  // a host's name: the user whose messages come from it (From of its requests)
  function whoIs(host, messages) {
    for (const m of messages) {
      if (m.remote !== host || m.status != null) continue;
      const user = m.direction === 'in' ? userOf(m.from) : userOf(m.request_uri);
      if (user && user !== '?') return user + ' @ ' + host.split(':')[0];
    }
    return '';
  }

  // -- the live link, reconnecting by itself

  let delay = 500;
  function connect() {
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    const ws = new WebSocket(scheme + location.host + '/events?token=' + encodeURIComponent(token));
    ws.onopen = () => {
      delay = 500;
      state.connectedAt = Date.now();
      state.connects += 1;
      const link = $('link');
      link.textContent = 'live';
      link.className = 'pill on';
    };
    ws.onmessage = (msg) => {
      const e = JSON.parse(msg.data);
      if (e.type === 'snapshot') {
        applySnapshot(e);
        for (const m of e.messages) noteCallId(m.call_id);
      } else {
        applyEvent(e);
      }
    };
    ws.onclose = () => {
      const link = $('link');
      link.textContent = 'reconnecting…';
      link.className = 'pill off';
      setTimeout(connect, delay);
      delay = Math.min(delay * 2, 5000);
    };
  }

  // expiry countdowns and call durations move every second
  setInterval(() => {
    const now = Date.now();
    for (const cell of document.querySelectorAll('#registrations td.expires')) {
      cell.textContent = seconds((Number(cell.getAttribute('data-at')) - now) / 1000);
    }
    scheduleRender('dialogs');
  }, 1000);

  window.reticulumAdmin = { state, select };
  renderAll();
  connect();
})();
