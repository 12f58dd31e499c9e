// Shared by the ward, chair and print pages: API calls with the CSRF token, sign-in, the live event stream with
// its link watchdog, the ward model, tile and alarm rendering, and the alarm tones. Plain JS, no build step.
'use strict';

const Vigil = (() => {
  /** Link is declared lost after this long without any message: heartbeats come every 2 s, so the banner shows
   *  within 3.75 s of the last message (checked every 250 ms), well inside the 5 s the ward was promised. */
  const LINK_TIMEOUT_MS = 3500;
  /** A reconnection attempt with no answer for this long is abandoned and retried. */
  const RETRY_HUNG_MS = 8000;
  /** Continuous values older than this are stale (CLINICAL.md: 10 s silence is a technical alarm). */
  const STALE_CONTINUOUS_S = 10;
  /** A NIBP older than this is shown as stale (cycle is 5-15 min). */
  const STALE_NIBP_S = 20 * 60;
  const PRIORITY_RANK = { high: 3, medium: 2, low: 1 };
  const MARKER = { high: '***', medium: '**', low: '*' };
  const PHASE_LABEL = {
    idle: 'No session', pre_infusion: 'Pre-infusion', infusion: 'Infusion', observation: 'Observation', ended: 'Ended',
  };

  // ---------- small helpers ----------
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const pad = (n) => String(n).padStart(2, '0');
  function fmtClock(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtDuration(s) {
    s = Math.max(0, Math.floor(s));
    return `${pad(Math.floor(s / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
  }
  function fmtAge(s) {
    s = Math.max(0, Math.round(s));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  }
  const num = (v) => (v === null || v === undefined ? '—' : String(Math.round(v)));

  // Server clock offset from heartbeats, so ages are right even when a tablet's clock is off.
  let clockOffset = 0;
  const now = () => Date.now() + clockOffset;

  // ---------- API and sign-in ----------
  let me = { user: null, can_act: false, can_view: true, csrf: null, demo: false };
  const meListeners = [];

  async function api(path, opts = {}) {
    const headers = { Accept: 'application/json' };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    if (me.csrf) headers['X-CSRF-Token'] = me.csrf;
    const res = await fetch(path, {
      method: opts.method || 'GET', headers, credentials: 'same-origin',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    let data = null;
    try { data = await res.json(); } catch (_) { data = null; }
    if (!res.ok) {
      const err = new Error((data && data.error) || `${res.status} ${res.statusText}`);
      err.status = res.status;
      throw err;
    }
    return data;
  }

  function setMe(m) {
    me = m;
    for (const f of meListeners) f(me);
  }
  async function loadMe() { setMe(await api('/api/me')); return me; }

  function toast(message, isError) {
    const t = document.getElementById('toast');
    if (!t) return;
    t.textContent = message;
    t.classList.toggle('error', !!isError);
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.textContent = ''; }, 5000);
  }

  let pendingAction = null;
  function signInDialog(thenRun) {
    pendingAction = thenRun || null;
    const d = document.getElementById('sign-in-dialog');
    document.getElementById('sign-in-error').textContent = '';
    d.showModal();
    document.getElementById('sign-in-name').focus();
  }

  /** Wires the user box and the sign-in dialog present on every page. */
  function setupAuth() {
    const form = document.getElementById('sign-in-form');
    const dialog = document.getElementById('sign-in-dialog');
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = document.getElementById('sign-in-name').value.trim();
      const password = document.getElementById('sign-in-password').value;
      const errBox = document.getElementById('sign-in-error');
      errBox.textContent = 'Signing in…';
      try {
        setMe(await api('/api/session', { method: 'POST', body: { name, password } }));
        document.getElementById('sign-in-password').value = '';
        dialog.close();
        toast(`Signed in as ${me.user}`);
        const run = pendingAction;
        pendingAction = null;
        if (run && me.can_act) run();
        else if (run) toast('Your role cannot do this', true);
      } catch (e) {
        errBox.textContent = e.status === 401 ? 'Wrong name or password' : e.message;
      }
    });
    document.getElementById('sign-in-cancel').addEventListener('click', () => { pendingAction = null; dialog.close(); });
    document.getElementById('sign-in-btn').addEventListener('click', () => signInDialog(null));
    document.getElementById('sign-out-btn').addEventListener('click', async () => {
      try { setMe(await api('/api/session', { method: 'DELETE' })); toast('Signed out'); } catch (e) { toast(e.message, true); }
    });
    meListeners.push((m) => {
      document.getElementById('user-name').textContent = m.signed_in ? `${m.user} (${m.role})` : (m.demo ? 'demo (no sign-in)' : 'not signed in');
      document.getElementById('sign-in-btn').hidden = m.signed_in;
      document.getElementById('sign-out-btn').hidden = !m.signed_in;
      const demo = document.getElementById('demo-banner');
      if (demo) demo.hidden = !m.demo;
    });
  }

  /** Runs a bed command as the current user, asking for sign-in first when needed. */
  async function command(bed, body, label) {
    if (!me.can_act) {
      if (me.signed_in) toast(`${me.user} is a ${me.role}: sign in as a nurse to do this`, true);
      signInDialog(() => command(bed, body, label));
      return null;
    }
    try {
      const res = await api(`/api/beds/${encodeURIComponent(bed)}/commands`, { method: 'POST', body });
      toast(`${label}: done`);
      return res;
    } catch (e) {
      if (e.status === 401) { await loadMe(); signInDialog(() => command(bed, body, label)); return null; }
      toast(`${label}: ${e.message}`, true);
      return null;
    }
  }

  // ---------- ward model ----------
  const ward = { site: '', ward: '', beds: new Map(), order: [], alarmStart: new Map(), lastId: 0, lastEventId: '', testSeen: new Set() };
  const testListeners = [];

  function applySnapshot(snap) {
    ward.site = snap.site; ward.ward = snap.ward; ward.lastId = snap.last_id;
    ward.beds.clear(); ward.order = [];
    for (const b of snap.beds) { ward.beds.set(b.id, b); ward.order.push(b.id); }
  }
  function applyEvent(ev) {
    ward.lastId = ev.id;
    const bed = ward.beds.get(ev.bed);
    if (!bed) return;
    switch (ev.type) {
      case 'vitals': bed.vitals = ev; break;
      case 'alarms': bed.alarms = ev; break;
      case 'session': bed.session = ev; break;
      case 'device': bed.devices = bed.devices || {}; bed.devices[ev.source] = ev; break;
      case 'alarm':
        // The self-test's alarms this screen received on its own stream (the button's `browser` hop).
        if (ev.test && ev.phase === 'start') { ward.testSeen.add(ev.alarm_id); for (const f of testListeners) f(ev); }
        if (ev.phase === 'start') ward.alarmStart.set(ev.alarm_id, ev.time);
        if (ev.phase === 'end') ward.alarmStart.delete(ev.alarm_id);
        break;
      default: break;
    }
  }
  // A self-test's alarm (`test: true`) is shown labelled TEST on its own strip: it never flashes, sounds, colours
  // the tile or counts as the bed's alarm.
  const alarmsOf = (bed) => ((bed.alarms && bed.alarms.alarms) || []).filter((a) => !a.test);
  const testAlarmsOf = (bed) => ((bed.alarms && bed.alarms.alarms) || []).filter((a) => a.test);
  // The start of an alarm is known when its first event was seen (live, or seq 1 in a snapshot); otherwise the page
  // (reloaded mid-alarm) only knows its latest change, and says so.
  const startKnown = (a) => ward.alarmStart.has(a.alarm_id) || a.seq === 1;
  const startOf = (a) => ward.alarmStart.get(a.alarm_id) || a.time;
  const signalling = (a) => a.state === 'active' || a.state === 'latched' || a.state === 'audio-paused';
  const audible = (a) => a.state === 'active' || a.state === 'latched';

  /** Every present alarm, highest priority first, then most recent first. */
  function sortedAlarms(bedIds, withTests) {
    const list = [];
    for (const id of bedIds || ward.order) {
      const bed = ward.beds.get(id);
      if (bed) for (const a of alarmsOf(bed).concat(withTests ? testAlarmsOf(bed) : [])) list.push({ bed, alarm: a });
    }
    list.sort((x, y) => (PRIORITY_RANK[y.alarm.priority] - PRIORITY_RANK[x.alarm.priority])
      || (Date.parse(startOf(y.alarm)) - Date.parse(startOf(x.alarm))));
    return list;
  }

  /** The highest alarm of a bed and whether it is still signalling (flashes) or only acknowledged (steady). */
  function bedAlarmState(bed) {
    let top = null;
    for (const a of alarmsOf(bed)) {
      const rank = PRIORITY_RANK[a.priority] * 2 + (signalling(a) ? 1 : 0);
      if (!top || rank > top.rank) top = { rank, alarm: a };
    }
    return top && top.alarm;
  }

  // ---------- live stream with watchdog ----------
  const live = { es: null, attemptAt: 0, lastMessage: 0, lost: true, everConnected: false, retry: 0, handlers: null, lostSince: null };

  function setLinkLost(lost, reason) {
    const changed = live.lost !== lost;
    live.lost = lost;
    if (lost && !live.lostSince) live.lostSince = Date.now();
    if (!lost) live.lostSince = null;
    const banner = document.getElementById('link-banner');
    const status = document.getElementById('link-status');
    if (banner) {
      banner.hidden = !lost;
      if (lost) {
        const since = live.everConnected && live.lastMessage ? ` since ${fmtClock(live.lastMessage)}` : '';
        banner.textContent = `LINK LOST — data on this screen is not live${since}. ${reason || 'Reconnecting…'} Watch the bedside monitors.`;
      }
    }
    if (status) {
      status.textContent = lost ? 'Link lost' : 'Live';
      status.className = `link-status ${lost ? 'lost' : 'live'}`;
    }
    document.body.classList.toggle('link-lost', lost);
    if (changed && live.handlers && live.handlers.onLink) live.handlers.onLink(lost);
  }

  function connect(handlers) {
    live.handlers = handlers;
    open();
    setInterval(() => {
      if (!live.lost && Date.now() - live.lastMessage > LINK_TIMEOUT_MS) {
        setLinkLost(true, 'No heartbeat from the server.');
        reopen();
      } else if (live.lost && live.es && Date.now() - live.attemptAt > RETRY_HUNG_MS) {
        // A reconnection attempt that neither fails nor delivers (a silent network) must not hang forever.
        reopen();
      }
    }, 250);
  }
  function reopen() {
    if (live.es) { live.es.close(); live.es = null; }
    const delay = Math.min(5000, 1000 * 2 ** live.retry);
    live.retry = Math.min(live.retry + 1, 3);
    clearTimeout(live.timer);
    live.timer = setTimeout(open, delay);
  }
  function open() {
    const url = live.everConnected && ward.lastEventId ? `/api/events?last_id=${encodeURIComponent(ward.lastEventId)}` : '/api/events';
    const es = new EventSource(url);
    live.es = es;
    live.attemptAt = Date.now();
    const alive = () => {
      live.lastMessage = Date.now();
      live.retry = 0;
      if (live.lost) setLinkLost(false);
    };
    es.addEventListener('snapshot', (m) => {
      applySnapshot(JSON.parse(m.data));
      ward.lastEventId = m.lastEventId;
      live.everConnected = true;
      alive();
      live.handlers.render();
    });
    es.addEventListener('hub', (m) => {
      if (!live.everConnected) return;
      applyEvent(JSON.parse(m.data));
      ward.lastEventId = m.lastEventId;
      alive();
      live.handlers.render();
    });
    es.addEventListener('heartbeat', (m) => {
      const hb = JSON.parse(m.data);
      clockOffset = Date.parse(hb.time) - Date.now();
      if (live.everConnected) alive();
    });
    es.addEventListener('shutdown', () => {
      setLinkLost(true, 'The Vigil server is shutting down.');
      reopen();
    });
    es.onerror = () => {
      if (es !== live.es) return;
      if (es.readyState === EventSource.CLOSED || !live.lost) {
        setLinkLost(true, 'Connection to the Vigil server failed. Reconnecting…');
      }
      reopen();
    };
  }

  // ---------- rendering ----------
  function valueOf(bed, param) {
    const vs = (bed.vitals && bed.vitals.values) || [];
    return vs.find((v) => v.parameter === param) || null;
  }
  /** A technical alarm: Vigil's own, or an INOP the monitor reports (source monitor, evidence.technical). */
  function isTech(a) {
    return a.kind === 'technical' || (a.source === 'monitor' && !!(a.evidence && a.evidence.technical));
  }
  /** Which alarm (if any) concerns this parameter. */
  function paramAlarm(bed, params) {
    let best = null;
    for (const a of alarmsOf(bed)) {
      if (!a.parameter || !params.includes(a.parameter) || isTech(a)) continue;
      if (!best || PRIORITY_RANK[a.priority] > PRIORITY_RANK[best.priority]) best = a;
    }
    return best;
  }
  /** The perfusion index beside the SpO2, when the oximeter sends a recent one (it is never alarmed on). */
  function perfusionNote(bed) {
    const pi = valueOf(bed, 'pi');
    if (!pi || pi.value === null || (now() - Date.parse(pi.time)) / 1000 > STALE_CONTINUOUS_S) return null;
    return `PI ${Number(pi.value.toFixed(2))}%`;
  }
  function numeric(bed, cls, label, params, staleAfter, format, note = null) {
    const v = valueOf(bed, params[0]);
    const age = v ? (now() - Date.parse(v.time)) / 1000 : null;
    const stale = !v || v.value === null || age > staleAfter || live.lost;
    const alarm = paramAlarm(bed, params);
    const classes = ['num', cls];
    if (v && age > staleAfter) classes.push('stale');
    if (v && v.status === 'questionable') classes.push('questionable');
    if (alarm) classes.push(`alarm-${alarm.priority}`);
    let text = v ? format(v) : '—';
    if (v && v.status === 'demo') text += ' DEMO';
    let ageText = '';
    if (v && v.value === null) ageText = v.status === 'unavailable' ? 'no value' : v.status;
    else if (v && (params[0].startsWith('nibp') || stale)) ageText = fmtAge(age);
    return el('div', { class: classes.join(' '), 'data-param': params[0], 'data-time': v ? v.time : '' },
      el('dt', { text: label }),
      el('dd', {}, el('span', { class: 'value', text }), el('span', { class: 'age', text: ageText }),
        note ? el('span', { class: 'note', 'data-param': 'pi', text: note }) : null));
  }

  /** One chair tile: label, phase and elapsed time, alarm line, technical strip, big numerics. */
  function renderTile(bed, opts = {}) {
    const top = bedAlarmState(bed);
    const s = bed.session;
    const phase = (s && s.phase) || 'idle';
    const since = s && (phase === 'infusion' ? s.infusion_started : s.started);
    let phaseText = PHASE_LABEL[phase] || phase;
    if (since && phase !== 'ended' && phase !== 'idle') phaseText += ` · ${fmtDuration((now() - Date.parse(since)) / 1000)}`;
    const classes = ['tile'];
    if (top) {
      classes.push(`prio-${top.priority}`);
      if (signalling(top)) { if (top.priority !== 'low') classes.push(`flash-${top.priority}`); } else classes.push('acked');
    }
    if (live.lost) classes.push('not-live');
    if (phase === 'idle' || phase === 'ended') classes.push('idle');

    const physio = alarmsOf(bed).filter((a) => !isTech(a))
      .sort((x, y) => PRIORITY_RANK[y.priority] - PRIORITY_RANK[x.priority])[0];
    const tech = alarmsOf(bed).filter(isTech);
    let alarmLine;
    if (physio) {
      alarmLine = el('div', { class: `tile-alarm text-${physio.priority}` },
        `${MARKER[physio.priority]} ${physio.message}`,
        el('span', { class: 'who', text: stateText(physio) }));
    } else {
      alarmLine = tech.length ? null : el('div', { class: 'tile-alarm none', text: 'No alarms' });
    }
    const hr = valueOf(bed, 'hr');
    const pulseParams = hr && hr.value !== null ? ['hr', 'pr'] : ['pr', 'hr'];
    const tile = el('article', {
      class: classes.join(' '), 'data-bed': bed.id, 'data-priority': top ? top.priority : 'none',
      'data-state': top ? top.state : 'none', 'aria-labelledby': `tile-${bed.id}`,
    },
    el('header', { class: 'tile-head' },
      el('h3', { id: `tile-${bed.id}` }, opts.noLink ? bed.label
        : el('a', { href: `/chair/${encodeURIComponent(bed.id)}`, text: bed.label, 'data-key': `tile-${bed.id}` })),
      el('span', { class: 'marker', 'aria-label': top ? `${top.priority} priority alarm` : null, text: top ? MARKER[top.priority] : '' }),
      el('span', { class: 'phase', text: phaseText })),
    alarmLine,
    tech.map((a) => el('div', { class: `inop ${a.priority}`, 'data-condition': a.condition },
      `INOP ${MARKER[a.priority]} ${a.message}`, el('span', { class: 'who', text: ` ${stateText(a)}` }))),
    testAlarmsOf(bed).map((a) => el('div', { class: 'test-alarm', 'data-condition': a.condition, 'data-alarm': a.alarm_id },
      el('span', { class: 'kind', text: 'TEST' }), ` ${a.message}`)),
    el('dl', { class: 'numerics' },
      numeric(bed, 'spo2', 'SpO2 %', ['spo2'], STALE_CONTINUOUS_S, (v) => num(v.value), perfusionNote(bed)),
      numeric(bed, 'pulse', pulseParams[0] === 'hr' ? 'HR /min' : 'Pulse /min', pulseParams, STALE_CONTINUOUS_S, (v) => num(v.value)),
      numeric(bed, 'nibp', 'NIBP mmHg', ['nibp_sys', 'nibp_dia', 'nibp_mean'], STALE_NIBP_S, (v) => {
        const dia = valueOf(bed, 'nibp_dia');
        const mean = valueOf(bed, 'nibp_mean');
        return `${num(v.value)}/${num(dia && dia.value)}${mean && mean.value !== null ? ` (${num(mean.value)})` : ''}`;
      })));
    return tile;
  }

  function stateText(a) {
    const at = (t) => fmtClock(Date.parse(t));
    switch (a.state) {
      case 'acknowledged': return `Acknowledged${a.by ? ` by ${a.by}` : ''} at ${at(a.time)}`;
      case 'audio-paused': return `Audio paused${a.by ? ` by ${a.by}` : ''} until ${a.audio_paused_until ? at(a.audio_paused_until) : '?'}`;
      case 'latched': return 'Latched — condition over, acknowledge to clear';
      case 'active': return 'Active';
      default: return a.state;
    }
  }

  /** One entry of an alarm list with its actions. */
  /** Where each alarm stands in its escalation chain (GET /api/notify/chains), by alarm id. */
  const chains = new Map();

  async function loadChains() {
    const data = await api('/api/notify/chains');
    chains.clear();
    for (const c of (data && data.chains) || []) { if (c.steps > 0) chains.set(c.alarm_id, c); }
  }

  /** One line for the alarm's row: `Escalation step 2 of 3 (charge-nurse) · next step in 40 s`. */
  function chainText(c) {
    const at = `step ${c.step + 1} of ${c.steps} (${c.target})`;
    if (c.status === 'running') {
      const left = Math.max(0, Math.round((Date.parse(c.next_at) - now()) / 1000));
      return `Escalation ${at} · ${c.step + 1 < c.steps ? 'next step' : 'chain ends'} in ${left} s`;
    }
    if (c.status === 'acknowledged') return `Escalation stopped at ${at}: acknowledged by ${c.by || 'someone'}`;
    if (c.status === 'ended') return `Escalation stopped at ${at}: the alarm ended`;
    return `Escalation: all ${c.steps} steps notified, nobody acknowledged`;
  }

  function renderAlarm(bed, a) {
    const classes = ['alarm', `prio-${a.priority}`, `state-${a.state}`];
    if (a.test) classes.push('test');
    else if (signalling(a)) { if (a.priority !== 'low') classes.push(`flash-${a.priority}`); } else classes.push('acked');
    const what = `${bed.label} ${a.message}`;
    const actions = el('div', { class: 'a-actions' });
    if (a.state !== 'acknowledged') {
      actions.append(el('button', {
        type: 'button', class: 'ack primary', 'data-key': `ack-${a.alarm_id}`, 'aria-label': `Acknowledge ${what}`,
        onclick: () => command(bed.id, { command: 'acknowledge', alarm_id: a.alarm_id }, `Acknowledge ${what}`),
      }, 'Acknowledge'));
    }
    if (a.state === 'active' || a.state === 'latched') {
      actions.append(el('button', {
        type: 'button', class: 'pause', 'data-key': `pause-${a.alarm_id}`, 'aria-label': `Pause audio 2 min, ${bed.label}`,
        onclick: () => command(bed.id, { command: 'pause_audio', seconds: 120 }, `Pause audio ${bed.label}`),
      }, 'Pause audio 2 min'));
    } else if (a.state === 'audio-paused') {
      actions.append(el('button', {
        type: 'button', class: 'resume', 'data-key': `resume-${a.alarm_id}`, 'aria-label': `Resume audio, ${bed.label}`,
        onclick: () => command(bed.id, { command: 'resume_audio' }, `Resume audio ${bed.label}`),
      }, 'Resume audio'));
    }
    return el('li', { class: classes.join(' '), 'data-alarm': a.alarm_id, 'data-bed': bed.id, 'data-state': a.state },
      el('div', { class: 'a-head' },
        el('span', { class: 'marker', text: MARKER[a.priority] }),
        el('span', { class: 'bed', text: bed.label }),
        el('span', { class: 'msg', text: a.message }),
        a.test ? el('span', { class: 'kind test', text: 'TEST' }) : null,
        isTech(a) && !a.test ? el('span', { class: 'kind', text: 'INOP' }) : null,
        a.source === 'monitor' ? el('span', { class: 'kind monitor', title: "The monitor's own alarm", text: 'MONITOR' }) : null),
      el('div', { class: 'a-meta' },
        `${startKnown(a) ? 'Since' : 'Last change'} ${fmtClock(Date.parse(startOf(a)))} · `, el('strong', { text: stateText(a) })),
      chains.has(a.alarm_id)
        ? el('div', { class: `a-chain chain-${chains.get(a.alarm_id).status}`, text: chainText(chains.get(a.alarm_id)) })
        : null,
      actions);
  }

  /** Replaces only the children whose markup changed, keeps keyboard focus on the same control (by data-key),
   *  and keeps every flashing element on one shared clock so redraws never reset or desynchronise the flash. */
  function morph(container, fresh) {
    const active = document.activeElement;
    const key = active && container.contains(active) ? active.getAttribute('data-key') : null;
    const old = Array.from(container.children);
    fresh.forEach((node, i) => {
      if (old[i] && old[i].outerHTML === node.outerHTML) {
        // Same markup means same bed, alarm and action: the old node's handlers do the same thing.
        return;
      }
      if (old[i]) container.replaceChild(node, old[i]); else container.append(node);
    });
    for (let i = fresh.length; i < old.length; i++) old[i].remove();
    if (key) {
      const again = container.querySelector(`[data-key="${CSS.escape(key)}"]`);
      if (again && again !== document.activeElement) again.focus();
    }
    syncFlash();
  }
  function syncFlash() {
    const t = Date.now();
    const root = document.documentElement.style;
    root.setProperty('--flash-delay-high', `-${t % 500}ms`);
    root.setProperty('--flash-delay-medium', `-${t % 2000}ms`);
  }

  /** A command in words, for logs and reports. */
  function describeCommand(c) {
    if (c.command === 'pause_audio') return `pause audio ${c.seconds} s`;
    if (c.command === 'set_baseline') return `set baseline ${c.sys}/${c.dia}`;
    if (c.command === 'acknowledge') return c.alarm_id ? `acknowledge ${c.alarm_id}` : 'acknowledge all';
    if (c.command === 'session_start' && c.patient) return `session start (${c.patient})`;
    return c.command.replace(/_/g, ' ');
  }

  // ---------- alarm tones (IEC 60601-1-8 pattern shapes, CLINICAL.md) ----------
  // Pulse onsets in seconds within one burst, pulse length, pitch and how often the burst repeats.
  const PATTERNS = {
    high: { onsets: [0, 0.2, 0.4, 0.8, 1.0, 1.6, 1.8, 2.0, 2.4, 2.6], pulse: 0.15, freq: 880, every: 10 },
    medium: { onsets: [0, 0.25, 0.5], pulse: 0.2, freq: 660, every: 25 },
    low: { onsets: [0], pulse: 0.22, freq: 520, every: Infinity },
  };
  const sound = { ctx: null, enabled: false, lastPlayed: { high: 0, medium: 0 }, sounded: new Set(), last: null, wave: null };

  function enableSound(on) {
    sound.enabled = on;
    if (on && !sound.ctx) {
      const AC = window.AudioContext || window.webkitAudioContext;
      if (!AC) { toast('This browser cannot play sound', true); sound.enabled = false; return false; }
      sound.ctx = new AC();
      // A few harmonics: IEC asks for at least four within 300-4000 Hz so the tone is easy to localise.
      const real = new Float32Array([0, 1, 0.5, 0.35, 0.25, 0.18]);
      sound.wave = sound.ctx.createPeriodicWave(real, new Float32Array(real.length));
    }
    if (on && sound.ctx.state === 'suspended') sound.ctx.resume();
    if (on) { sound.lastPlayed = { high: 0, medium: 0 }; }
    return sound.enabled;
  }
  function play(priority) {
    const p = PATTERNS[priority];
    sound.last = { priority, at: Date.now() };
    if (!sound.ctx) return;
    const t0 = sound.ctx.currentTime + 0.05;
    for (const onset of p.onsets) {
      const osc = sound.ctx.createOscillator();
      const gain = sound.ctx.createGain();
      osc.setPeriodicWave(sound.wave);
      osc.frequency.value = p.freq;
      const t = t0 + onset;
      gain.gain.setValueAtTime(0, t);
      gain.gain.linearRampToValueAtTime(0.25, t + 0.02);
      gain.gain.setValueAtTime(0.25, t + p.pulse - 0.03);
      gain.gain.linearRampToValueAtTime(0, t + p.pulse);
      osc.connect(gain).connect(sound.ctx.destination);
      osc.start(t);
      osc.stop(t + p.pulse + 0.02);
    }
  }
  /** Called twice a second: plays the highest audible priority's burst when it is due. A lost link is a
   *  technical alarm at this end, sounded as medium. */
  function soundTick() {
    if (!sound.enabled) return;
    let top = null;
    for (const { alarm } of sortedAlarms()) {
      if (!audible(alarm)) continue;
      if (alarm.priority === 'low') {
        if (!sound.sounded.has(alarm.alarm_id)) { sound.sounded.add(alarm.alarm_id); if (!top) top = 'low'; }
        continue;
      }
      if (!top || PRIORITY_RANK[alarm.priority] > PRIORITY_RANK[top]) top = alarm.priority;
    }
    if (live.lost && live.everConnected && (!top || top === 'low')) top = 'medium';
    if (!top) return;
    const t = Date.now();
    if (top === 'low') { play('low'); return; }
    if (t - sound.lastPlayed[top] >= PATTERNS[top].every * 1000) {
      sound.lastPlayed[top] = t;
      if (top === 'high') sound.lastPlayed.medium = t;
      play(top);
    }
  }
  setInterval(soundTick, 500);

  function setupSoundButton() {
    const btn = document.getElementById('sound-toggle');
    if (!btn) return;
    btn.addEventListener('click', () => {
      const on = enableSound(!sound.enabled);
      btn.setAttribute('aria-pressed', on ? 'true' : 'false');
      btn.textContent = on ? 'Sound on' : 'Enable sound';
      toast(on ? 'Alarm sound on for this screen' : 'Alarm sound off for this screen');
    });
  }

  // The server's link to the MQTT broker: integrators (nurse call, paging) depend on it, so its loss is shown here
  // as a technical condition, next to this screen's own link.
  // A failing notification target (webhook, e-mail, alert manager) is shown the same way: alarms may not reach
  // the nurse away from the screen.
  function watchServerLinks() {
    const pill = document.getElementById('mqtt-status');
    const notifyPill = document.getElementById('notify-status');
    if (!pill) return;
    const poll = async () => {
      let mqtt = null;
      let notify = null;
      try { ({ mqtt, notify } = await api('/api/status')); } catch (_) { return; } // this screen's own link banner covers it
      if (notifyPill) {
        const failing = (notify || []).filter((t) => t.failing);
        notifyPill.hidden = failing.length === 0;
        notifyPill.textContent = `Notify: ${failing.map((t) => t.target).join(', ')} failing`;
        notifyPill.title = failing.map((t) => `${t.target} (${t.kind}): ${t.problem.failures} failures since ${fmtClock(Date.parse(t.problem.since))}: ${t.problem.reason}`).join('\n');
      }
      pill.hidden = !mqtt;
      if (!mqtt) return;
      const ok = mqtt.state === 'connected';
      pill.className = `link-status ${ok ? 'live' : 'lost'}`;
      pill.textContent = ok ? 'MQTT' : `MQTT ${mqtt.state}`;
      pill.title = ok ? `Broker ${mqtt.broker} connected` : `Broker ${mqtt.broker}: ${mqtt.last_error || mqtt.state} since ${fmtClock(Date.parse(mqtt.since))}`;
    };
    poll();
    setInterval(poll, 5000);
  }

  function startClock() {
    const c = document.getElementById('clock');
    if (!c) return;
    const tick = () => { c.textContent = fmtClock(now()); };
    tick();
    setInterval(tick, 1000);
  }

  return {
    el, api, me: () => me, loadMe, setupAuth, command, toast, connect, ward, live, renderTile, renderAlarm,
    sortedAlarms, morph, describeCommand, fmtClock, fmtDuration, fmtAge, now, setupSoundButton, startClock, watchServerLinks, sound, PRIORITY_RANK, MARKER,
    PHASE_LABEL, onMe: (f) => meListeners.push(f), signInDialog, stateText, onTestAlarm: (f) => testListeners.push(f),
    loadChains, chainText,
  };
})();
window.Vigil = Vigil;
