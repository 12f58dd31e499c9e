// The chair view: live numerics and alarms for one chair, session controls, trends from the store with limits,
// baseline band and alarm markers, the session's alarm/notification/action log, limits and export links.
'use strict';

(() => {
  const V = window.Vigil;
  const bedId = decodeURIComponent(location.pathname.split('/')[2] || '');
  const enc = encodeURIComponent(bedId);
  const $ = (id) => document.getElementById(id);
  let limits = null;
  let lastDoc = null;
  let seenKey = '';

  $('export-csv').href = `/api/beds/${enc}/export.csv`;
  $('export-print').href = `/chair/${enc}/print`;

  const bed = () => V.ward.beds.get(bedId);
  const phaseOf = (b) => (b && b.session && b.session.phase) || 'idle';

  function render() {
    const b = bed();
    if (!b) return;
    $('chair-name').textContent = b.label;
    const alarms = V.sortedAlarms([bedId]);
    const worst = alarms[0] && alarms[0].alarm.priority;
    document.title = `${worst ? `${V.MARKER[worst]} ` : ''}${b.label} · Vigil`;
    V.morph($('tile-box'), [V.renderTile(b, { noLink: true })]);
    V.morph($('alarm-list'), alarms.map(({ alarm }) => V.renderAlarm(b, alarm)));
    $('no-alarms').hidden = alarms.length > 0;

    const s = b.session;
    const phase = phaseOf(b);
    const facts = [['Phase', V.PHASE_LABEL[phase] || phase]];
    if (s && s.started) facts.push(['Started', `${V.fmtClock(Date.parse(s.started))} (${V.fmtDuration((V.now() - Date.parse(s.started)) / 1000)} ago)`]);
    if (s && s.infusion_started) facts.push(['Infusion started', V.fmtClock(Date.parse(s.infusion_started))]);
    if (s && s.patient) facts.push(['Patient', s.patient]);
    if (s && s.baseline) facts.push(['Baseline', `${s.baseline.sys}/${s.baseline.dia} mmHg (${s.baseline.source === 'entered' ? 'entered' : 'median before infusion'})`]);
    if (s && s.by) facts.push(['Last change by', `${s.by} at ${V.fmtClock(Date.parse(s.time))}`]);
    V.morph($('session-facts'), facts.flatMap(([k, v]) => [V.el('dt', { text: k }), V.el('dd', { text: v })]));

    const running = phase === 'pre_infusion' || phase === 'infusion' || phase === 'observation';
    $('btn-session-start').disabled = running;
    $('btn-infusion-start').disabled = phase !== 'pre_infusion';
    $('btn-infusion-stop').disabled = phase !== 'infusion';
    $('btn-baseline').disabled = !running;
    $('btn-session-end').disabled = !running;

    // Each source's link and error counters (issue #4: bad input is counted and visible, not silent).
    const devices = Object.values(b.devices || {}).sort((x, y) => x.source.localeCompare(y.source));
    V.morph($('monitor-body'), devices.map((d) => V.el('tr', {}, [
      V.el('td', { text: `${d.source} (${d.kind} ${d.device})` }),
      V.el('td', { text: d.link, class: d.link === 'connected' ? '' : 'stale' }),
      V.el('td', { text: `${d.frames_ok} / ${d.frames_bad} / ${d.values_rejected}` }),
      V.el('td', { text: d.last_error || '—' }),
    ])));
    $('no-monitors').hidden = devices.length > 0;

    // New alarm or session events on this chair: refresh the trends soon.
    const key = `${(b.alarms && b.alarms.bed_seq) || 0}|${(s && s.time) || ''}`;
    if (key !== seenKey) {
      seenKey = key;
      clearTimeout(render.timer);
      render.timer = setTimeout(loadHistory, 800);
    }
  }

  async function loadHistory() {
    try {
      const doc = await V.api(`/api/beds/${enc}/history`);
      lastDoc = doc;
      drawTrends();
      renderLog(doc, await loadAttempts(doc));
    } catch (e) {
      $('trend-window').textContent = `Trends unavailable: ${e.message}`;
    }
  }

  function drawTrends() {
    if (!lastDoc) return;
    const b = bed();
    const baseline = (b && b.session && b.session.baseline)
      || [...lastDoc.session_events].reverse().map((s) => s.baseline).find(Boolean) || null;
    const from = new Date(lastDoc.from);
    const to = new Date(lastDoc.to);
    $('trend-window').textContent = `${lastDoc.session ? `Session ${lastDoc.session.session_id}, ` : 'No session: last 2 hours, '}`
      + `${V.fmtClock(from.getTime())} to ${V.fmtClock(to.getTime())}. Updated every 15 s.`;
    window.VigilChart.drawSession($('charts'), lastDoc, limits, baseline);
  }

  // Every delivery attempt to a notification target in the same window (none without targets); the rest of
  // the log still shows when this read fails.
  async function loadAttempts(doc) {
    const q = `bed=${enc}&from=${encodeURIComponent(doc.from)}&to=${encodeURIComponent(doc.to)}`;
    try {
      return (await V.api(`/api/notify/attempts?${q}`)).attempts || [];
    } catch (e) {
      return [];
    }
  }

  function renderLog(doc, attempts) {
    const rows = [];
    // One row per notification (queue row) at its latest attempt, so a target that keeps failing does not push
    // the alarms out of the log.
    const latest = new Map();
    for (const n of attempts) latest.set(n.queue_id, n);
    for (const n of latest.values()) {
      const how = n.ok ? `delivered at attempt ${n.attempt}` : `failed ${n.attempt === 1 ? 'once' : `${n.attempt} times`} so far`;
      rows.push({ t: n.time, what: `Notification to ${n.target}: ${how} (${n.detail})`, who: '' });
    }
    for (const a of doc.alarms) {
      rows.push({ t: a.time, what: `${V.MARKER[a.priority]} ${a.message} · ${a.phase} → ${a.state}`, who: a.by || '' });
    }
    for (const a of doc.actions) {
      rows.push({ t: a.time, what: `Action: ${a.command ? V.describeCommand(a.command) : a.request} (${a.ok ? 'ok' : `refused: ${a.reason || ''}`})`, who: a.actor });
    }
    for (const s of doc.session_events) {
      rows.push({ t: s.time, what: `Session: ${s.action.replace(/_/g, ' ')}`, who: s.by || '' });
    }
    rows.sort((x, y) => Date.parse(y.t) - Date.parse(x.t));
    V.morph($('log-body'), rows.slice(0, 200).map((r) => V.el('tr', {},
      V.el('td', { text: V.fmtClock(Date.parse(r.t)) }), V.el('td', { text: r.what }), V.el('td', { text: r.who }))));
  }

  async function loadLimits() {
    const res = await V.api(`/api/beds/${enc}/limits`);
    limits = res.limits;
    const box = $('limits');
    if (!limits) {
      box.replaceChildren(V.el('p', { class: 'empty', text: `Profile "${res.profile}": limits not published to the dashboard.` }));
      return;
    }
    const names = { spo2: 'SpO2 %', pr: 'Pulse /min', hr: 'HR /min', nibp_sys: 'NIBP sys', nibp_dia: 'NIBP dia', nibp_mean: 'NIBP mean', rr: 'Resp /min', pi: 'PI %' };
    const rows = limits.bands.map((b) => V.el('tr', {},
      V.el('td', { text: names[b.parameter] || b.parameter }),
      V.el('td', { text: `${V.MARKER[b.priority]} ${b.priority}` }),
      V.el('td', { text: b.low === null ? '' : `< ${b.low}` }),
      V.el('td', { text: b.high === null ? '' : `> ${b.high}` })));
    const table = V.el('table', {},
      V.el('caption', { class: 'visually-hidden', text: `Alarm limits of profile ${limits.profile}` }),
      V.el('thead', {}, V.el('tr', {}, ...['Parameter', 'Priority', 'Low', 'High'].map((h) => V.el('th', { scope: 'col', text: h })))),
      V.el('tbody', {}, ...rows));
    const rise = limits.rise_sys || limits.rise_dia
      ? V.el('p', { text: `Rise from baseline: systolic +${limits.rise_sys ?? '—'} or diastolic +${limits.rise_dia ?? '—'} mmHg.` }) : null;
    box.replaceChildren(V.el('p', { text: `Profile: ${limits.profile}` }), table, rise || '');
    drawTrends();
  }

  function dialogForm(dialogId, formId, onSubmit) {
    const d = $(dialogId);
    d.querySelector('.cancel').addEventListener('click', () => d.close());
    $(formId).addEventListener('submit', (ev) => { ev.preventDefault(); d.close(); onSubmit(); });
    return () => { d.showModal(); d.querySelector('input').focus(); };
  }
  const numberOrNull = (id) => { const v = $(id).value.trim(); return v === '' ? null : Number(v); };
  const startDialog = dialogForm('session-dialog', 'session-form', () => V.command(bedId, {
    command: 'session_start', patient: $('session-patient').value.trim() || null,
    baseline_sys: numberOrNull('session-sys'), baseline_dia: numberOrNull('session-dia'),
  }, 'Start session'));
  const baselineDialog = dialogForm('baseline-dialog', 'baseline-form', () => V.command(bedId, {
    command: 'set_baseline', sys: Number($('baseline-sys').value), dia: Number($('baseline-dia').value),
  }, 'Set baseline'));
  const needSignIn = (run) => () => (V.me().can_act ? run() : V.signInDialog(run));
  $('btn-session-start').addEventListener('click', needSignIn(startDialog));
  $('btn-baseline').addEventListener('click', needSignIn(baselineDialog));
  $('btn-infusion-start').addEventListener('click', () => V.command(bedId, { command: 'infusion_start' }, 'Start infusion'));
  $('btn-infusion-stop').addEventListener('click', () => V.command(bedId, { command: 'infusion_stop' }, 'Stop infusion'));
  $('btn-session-end').addEventListener('click', () => {
    const b = bed();
    if (window.confirm(`End the session on ${b ? b.label : bedId}? Monitoring of this chair's session stops.`)) {
      V.command(bedId, { command: 'session_end' }, 'End session');
    }
  });

  V.setupAuth();
  V.setupSoundButton();
  V.startClock();
  V.watchServerLinks();
  V.loadMe().then((me) => {
    if (!me.can_view) V.signInDialog(null);
    V.connect({ render, onLink: render });
    loadLimits().catch(() => {});
    loadHistory();
  }).catch((e) => V.toast(`Cannot reach Vigil: ${e.message}`, true));
  setInterval(() => { if (bed()) render(); }, 1000);
  setInterval(loadHistory, 15000);
  window.addEventListener('resize', () => { clearTimeout(drawTrends.t); drawTrends.t = setTimeout(drawTrends, 200); });
  V.onMe(() => { if (bed()) render(); });
})();
