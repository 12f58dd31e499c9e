// The ward: a tile per chair and the alarm list, redrawn from the live model.
'use strict';

(() => {
  const V = window.Vigil;
  const tiles = document.getElementById('tiles');
  const list = document.getElementById('alarm-list');

  function render() {
    document.getElementById('ward-name').textContent = V.ward.ward ? `${V.ward.ward} · ${V.ward.site}` : 'Ward';
    V.morph(tiles, V.ward.order.map((id) => V.renderTile(V.ward.beds.get(id))));
    const alarms = V.sortedAlarms();
    // The list shows a self-test's TEST alarm too (after the real ones); the count and the title do not.
    V.morph(list, V.sortedAlarms(null, true).map(({ bed, alarm }) => V.renderAlarm(bed, alarm)));
    document.getElementById('no-alarms').hidden = alarms.length > 0;
    document.getElementById('alarm-count').textContent = alarms.length ? `(${alarms.length})` : '';
    const worst = alarms[0] && alarms[0].alarm.priority;
    document.title = `${worst ? `${V.MARKER[worst]} ` : ''}Vigil · ${V.ward.ward || 'Ward'}`;

  }

  V.setupAuth();
  V.setupSoundButton();
  V.startClock();
  V.watchServerLinks();
  V.loadMe().then((me) => {
    if (!me.can_view) { V.signInDialog(null); }
    V.connect({ render, onLink: render });
  }).catch((e) => V.toast(`Cannot reach Vigil: ${e.message}`, true));
  // Ages and elapsed times move even when nothing arrives.
  setInterval(() => { if (V.ward.order.length) render(); }, 1000);
  // Escalation chains move on the server's clock: read every 2 s (a ward without notification targets has none).
  const chains = () => V.loadChains().then(render).catch(() => {});
  chains();
  setInterval(chains, 2000);
  V.onMe(() => { if (V.ward.order.length) render(); });

  // The self-test button (admins; the loopback demo): the daemon confirms its hops, and this page adds its own,
  // `browser`: the test alarm arrived on this page's live stream.
  const button = document.getElementById('selftest-btn');
  const dialog = document.getElementById('selftest-dialog');
  V.onMe((m) => { button.hidden = !(m.role === 'admin' || (m.demo && !m.signed_in)); });
  document.getElementById('selftest-close').addEventListener('click', () => dialog.close());
  function seenHere(alarmId, within) {
    if (V.ward.testSeen.has(alarmId)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), within);
      V.onTestAlarm((ev) => { if (ev.alarm_id === alarmId) { clearTimeout(timer); resolve(true); } });
    });
  }
  button.addEventListener('click', async () => {
    const started = Date.now();
    const summary = document.getElementById('selftest-summary');
    const rows = document.getElementById('selftest-hops');
    summary.textContent = 'Running the self-test…';
    rows.replaceChildren();
    dialog.showModal();
    button.disabled = true;
    try {
      const report = await V.api('/api/selftest', { method: 'POST', body: {} });
      const seen = report.alarm_id ? await seenHere(report.alarm_id, 3000) : false;
      report.hops.push({
        hop: 'browser', ok: seen, ms: Date.now() - started,
        detail: seen ? 'shown on this page (its own event stream)' : 'not received by this page within 3 s',
      });
      const passed = report.passed && seen;
      summary.textContent = `Self-test of ${report.bed}: ${passed ? 'PASSED' : 'FAILED'}`;
      summary.dataset.result = passed ? 'passed' : 'failed';
      rows.replaceChildren(...report.hops.map((h) => V.el('tr', { 'data-hop': h.hop, 'data-ok': String(h.ok) },
        V.el('th', { scope: 'row', text: h.hop }), V.el('td', { text: h.ok ? 'ok' : 'FAILED' }),
        V.el('td', { class: 'num', text: `${h.ms} ms` }), V.el('td', { text: h.detail }))));
    } catch (e) {
      summary.textContent = `The self-test did not run: ${e.message}`;
      summary.dataset.result = 'error';
    } finally {
      button.disabled = false;
    }
  });
})();
