// The printable session report: the same history document as the chair view, on a light page for the chart.
'use strict';

(() => {
  const V = window.Vigil;
  const bedId = decodeURIComponent(location.pathname.split('/')[2] || '');
  const enc = encodeURIComponent(bedId);
  const $ = (id) => document.getElementById(id);
  const stamp = (t) => { const d = new Date(t); return `${d.toLocaleDateString()} ${V.fmtClock(d.getTime())}`; };
  $('back-link').href = `/chair/${enc}`;
  $('csv-link').href = `/api/beds/${enc}/export.csv`;
  $('print-btn').addEventListener('click', () => window.print());

  async function load() {
    const [doc, lim] = await Promise.all([V.api(`/api/beds/${enc}/history`), V.api(`/api/beds/${enc}/limits`)]);
    $('report-title').textContent = `Session report · ${doc.label}`;
    document.title = `Vigil · ${doc.label} · session report`;
    const s = doc.session;
    const baseline = [...doc.session_events].reverse().map((e) => e.baseline).find(Boolean);
    const infusion = doc.session_events.find((e) => e.infusion_started);
    const facts = [
      ['Chair', `${doc.label} (${doc.bed})`], ['Profile', doc.profile],
      ['Session', s ? s.session_id : 'none (last 2 hours shown)'],
      ['Patient pseudonym', (s && s.patient) || '—'],
      ['Started', s ? stamp(s.started) : '—'],
      ['Infusion started', infusion ? stamp(infusion.infusion_started) : '—'],
      ['Ended', s && s.ended ? stamp(s.ended) : (s ? 'running' : '—')],
      ['Baseline', baseline ? `${baseline.sys}/${baseline.dia} mmHg` : '—'],
      ['Window', `${stamp(doc.from)} to ${stamp(doc.to)}`],
      ['High-priority alarms', String(doc.alarms.filter((a) => !a.test && a.phase === 'start' && a.priority === 'high').length)],
    ];
    $('facts').replaceChildren(...facts.flatMap(([k, v]) => [V.el('dt', { text: k }), V.el('dd', { text: v })]));
    window.VigilChart.drawSession($('charts'), doc, lim.limits, baseline);
    $('alarms').replaceChildren(...doc.alarms.map((a) => V.el('tr', {},
      V.el('td', { text: stamp(a.time) }), V.el('td', { text: `${V.MARKER[a.priority]} ${a.priority}` }),
      V.el('td', { text: a.message }), V.el('td', { text: `${a.phase} → ${a.state}` }), V.el('td', { text: a.by || '' }))));
    const rows = [
      ...doc.session_events.map((e) => ({ t: e.time, what: `Session: ${e.action.replace(/_/g, ' ')}`, who: e.by || '', outcome: e.phase })),
      ...doc.actions.map((a) => ({
        t: a.time, what: `Action: ${a.command ? V.describeCommand(a.command) : a.request}`, who: a.actor,
        outcome: a.ok ? 'ok' : `refused: ${a.reason || ''}`,
      })),
    ].sort((x, y) => Date.parse(x.t) - Date.parse(y.t));
    $('actions').replaceChildren(...rows.map((r) => V.el('tr', {},
      V.el('td', { text: stamp(r.t) }), V.el('td', { text: r.what }), V.el('td', { text: r.who }), V.el('td', { text: r.outcome }))));
    $('generated').textContent = `Generated ${stamp(doc.generated)} by Vigil.`;
  }
  load().catch((e) => { $('report-title').textContent = `Session report unavailable: ${e.message}`; });
})();
