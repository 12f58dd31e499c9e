// Trend charts as inline SVG (no library, no CDN): lines or dots over time, limit lines, a baseline band, and
// markers on the time axis for alarms and session events. Used by the chair view and the printable report.
'use strict';

(() => {
  const NS = 'http://www.w3.org/2000/svg';
  const svgEl = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const pad = (n) => String(n).padStart(2, '0');
  const hhmm = (ms) => { const d = new Date(ms); return `${pad(d.getHours())}:${pad(d.getMinutes())}`; };

  function niceStep(span, target) {
    const raw = span / target;
    const mag = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }
  const TIME_STEPS = [1, 2, 5, 10, 15, 20, 30, 60, 120, 180, 240].map((m) => m * 60000);

  /**
   * Draws a chart into `container` (replacing its content).
   * spec: { title, from, to (ms), yMin, yMax, unit, height, series: [{ cls, kind: 'line'|'dots', label,
   * points: [{ t, v }] }], lines: [{ y, cls, label }], bands: [{ lo, hi, cls }], markers: [{ t, cls, label }] }
   */
  function drawChart(container, spec) {
    const width = Math.max(320, Math.floor(container.clientWidth || 900));
    const height = spec.height || 220;
    const m = { l: 46, r: 12, t: 10, b: 26 };
    const w = width - m.l - m.r;
    const h = height - m.t - m.b;
    const from = spec.from;
    const to = Math.max(spec.to, from + 60000);
    let yMin = spec.yMin;
    let yMax = spec.yMax;
    for (const s of spec.series) for (const p of s.points) {
      if (p.v === null || p.v === undefined) continue;
      yMin = Math.min(yMin, p.v);
      yMax = Math.max(yMax, p.v);
    }
    for (const l of spec.lines || []) { yMin = Math.min(yMin, l.y); yMax = Math.max(yMax, l.y); }
    const span = yMax - yMin || 1;
    yMin -= span * 0.05;
    yMax += span * 0.05;
    const x = (t) => m.l + ((t - from) / (to - from)) * w;
    const y = (v) => m.t + (1 - (v - yMin) / (yMax - yMin)) * h;

    const svg = svgEl('svg', {
      viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': spec.summary || spec.title, preserveAspectRatio: 'xMinYMin meet',
    });
    svg.append(svgEl('title', {}, spec.summary || spec.title));

    const yStep = niceStep(yMax - yMin, 4);
    for (let v = Math.ceil(yMin / yStep) * yStep; v <= yMax; v += yStep) {
      svg.append(svgEl('line', { class: 'grid', x1: m.l, x2: m.l + w, y1: y(v), y2: y(v) }));
      svg.append(svgEl('text', { x: m.l - 6, y: y(v) + 4, 'text-anchor': 'end' }, String(Math.round(v))));
    }
    const tStep = TIME_STEPS.find((s) => (to - from) / s <= 8) || TIME_STEPS[TIME_STEPS.length - 1];
    for (let t = Math.ceil(from / tStep) * tStep; t <= to; t += tStep) {
      svg.append(svgEl('line', { class: 'grid', x1: x(t), x2: x(t), y1: m.t, y2: m.t + h }));
      svg.append(svgEl('text', { x: x(t), y: height - 8, 'text-anchor': 'middle' }, hhmm(t)));
    }
    svg.append(svgEl('line', { class: 'axis', x1: m.l, x2: m.l + w, y1: m.t + h, y2: m.t + h }));
    svg.append(svgEl('line', { class: 'axis', x1: m.l, x2: m.l, y1: m.t, y2: m.t + h }));

    for (const b of spec.bands || []) {
      const top = y(Math.min(Math.max(b.hi, yMin), yMax));
      const bottom = y(Math.max(Math.min(b.lo, yMax), yMin));
      svg.append(svgEl('rect', { class: b.cls, x: m.l, y: top, width: w, height: Math.max(0, bottom - top) }));
    }
    for (const l of spec.lines || []) {
      svg.append(svgEl('line', { class: l.cls, x1: m.l, x2: m.l + w, y1: y(l.y), y2: y(l.y) }));
      if (l.label && l.left) svg.append(svgEl('text', { x: m.l + 4, y: y(l.y) - 3 }, l.label));
      else if (l.label) svg.append(svgEl('text', { x: m.l + w - 4, y: y(l.y) - 3, 'text-anchor': 'end' }, l.label));
    }
    for (const mk of spec.markers || []) {
      if (mk.t < from || mk.t > to) continue;
      const line = svgEl('line', { class: mk.cls, x1: x(mk.t), x2: x(mk.t), y1: m.t, y2: m.t + h });
      line.append(svgEl('title', {}, mk.label));
      svg.append(line);
      if (mk.tri) {
        const cx = x(mk.t);
        const tri = svgEl('path', { class: mk.cls, d: `M${cx - 6},${m.t + h} L${cx + 6},${m.t + h} L${cx},${m.t + h - 9} Z`, fill: 'currentColor' });
        svg.append(tri);
      }
    }
    for (const s of spec.series) {
      if (s.kind === 'dots') {
        for (const p of s.points) {
          if (p.v === null || p.v === undefined) continue;
          const c = svgEl('circle', { class: s.cls, cx: x(p.t), cy: y(p.v), r: 4 });
          c.append(svgEl('title', {}, `${s.label} ${p.v} at ${hhmm(p.t)}`));
          svg.append(c);
        }
        continue;
      }
      // Break the line at gaps (no value, or more than 30 s between points) so missing data is never drawn.
      let d = '';
      let prev = null;
      for (const p of s.points) {
        if (p.v === null || p.v === undefined) { prev = null; continue; }
        const cmd = prev && p.t - prev.t <= 30000 ? 'L' : 'M';
        d += `${cmd}${x(p.t).toFixed(1)},${y(p.v).toFixed(1)} `;
        prev = p;
      }
      if (d) svg.append(svgEl('path', { class: s.cls, d }));
    }
    container.replaceChildren(svg);
  }

  /** Builds the three session charts (SpO2, pulse/HR, NIBP) from a history document and optional limits. */
  function drawSession(root, doc, limits, baseline) {
    const from = Date.parse(doc.from);
    const to = Date.parse(doc.to);
    const by = {};
    for (const v of doc.vitals) (by[v.parameter] = by[v.parameter] || []).push({ t: Date.parse(v.time), v: v.value });
    const bands = (limits && limits.bands) || [];
    const limitLines = (params) => bands.filter((b) => params.includes(b.parameter)).flatMap((b) => [
      b.low !== null && b.low !== undefined ? { y: b.low, cls: `limit-${b.priority}`, label: `${b.priority} < ${b.low}` } : null,
      b.high !== null && b.high !== undefined ? { y: b.high, cls: `limit-${b.priority}`, label: `${b.priority} > ${b.high}` } : null,
    ]).filter(Boolean);
    const markers = [];
    for (const a of doc.alarms) {
      if (a.phase !== 'start' && a.phase !== 'escalate') continue;
      markers.push({ t: Date.parse(a.time), cls: `marker-${a.priority}`, label: `${a.priority}: ${a.message}`, tri: true });
    }
    for (const s of doc.session_events) {
      markers.push({ t: Date.parse(s.time), cls: 'marker-session', label: `${s.action.replace(/_/g, ' ')}${s.by ? ` by ${s.by}` : ''}` });
    }
    const pulseParam = (by.hr && by.hr.some((p) => p.v !== null)) ? 'hr' : 'pr';
    const charts = [
      {
        id: 'chart-spo2', title: 'SpO2 %', yMin: 85, yMax: 100,
        series: [{ cls: 'series-spo2', kind: 'line', label: 'SpO2', points: by.spo2 || [] }],
        lines: limitLines(['spo2']),
      },
      {
        id: 'chart-pulse', title: pulseParam === 'hr' ? 'Heart rate /min' : 'Pulse rate /min', yMin: 50, yMax: 110,
        series: [{ cls: 'series-pulse', kind: 'line', label: 'Pulse', points: by[pulseParam] || [] }],
        lines: limitLines([pulseParam]),
      },
      {
        id: 'chart-nibp', title: 'NIBP mmHg (systolic, diastolic, mean)', yMin: 50, yMax: 170,
        series: [
          { cls: 'dot-sys', kind: 'dots', label: 'Systolic', points: by.nibp_sys || [] },
          { cls: 'dot-dia', kind: 'dots', label: 'Diastolic', points: by.nibp_dia || [] },
          { cls: 'dot-mean', kind: 'dots', label: 'Mean', points: by.nibp_mean || [] },
        ],
        // Systolic high limits and diastolic high limits only: the low and mean limits would crowd the baseline band.
        lines: limitLines(['nibp_sys', 'nibp_dia']).filter((l) => !l.label.includes('<')),
        bands: [],
      },
    ];
    if (baseline) {
      const nibp = charts[2];
      const riseSys = limits && limits.rise_sys;
      const riseDia = limits && limits.rise_dia;
      nibp.bands.push({ lo: baseline.sys, hi: baseline.sys + (riseSys || 0), cls: 'baseline-band' });
      nibp.bands.push({ lo: baseline.dia, hi: baseline.dia + (riseDia || 0), cls: 'baseline-band' });
      nibp.lines.push({ y: baseline.sys, cls: 'baseline', label: `baseline ${baseline.sys}`, left: true });
      nibp.lines.push({ y: baseline.dia, cls: 'baseline', label: `baseline ${baseline.dia}`, left: true });
      if (riseSys) nibp.lines.push({ y: baseline.sys + riseSys, cls: 'limit-medium', label: `baseline +${riseSys}`, left: true });
      if (riseDia) nibp.lines.push({ y: baseline.dia + riseDia, cls: 'limit-medium', label: `baseline +${riseDia}`, left: true });
    }
    for (const c of charts) {
      let box = root.querySelector(`#${c.id}`);
      if (!box) {
        box = document.createElement('figure');
        box.className = 'chart';
        box.id = c.id;
        const cap = document.createElement('figcaption');
        cap.innerHTML = '';
        const h = document.createElement('h3');
        h.textContent = c.title;
        cap.append(h);
        box.append(cap, document.createElement('div'));
        root.append(box);
      }
      const values = c.series.flatMap((s) => s.points).filter((p) => p.v !== null);
      const last = values[values.length - 1];
      c.summary = `${c.title}: ${values.length} values${last ? `, latest ${last.v}` : ''}, ${markers.filter((mk) => mk.tri).length} alarm markers`;
      drawChart(box.lastChild, { ...c, from, to, markers });
    }
  }

  window.VigilChart = { drawChart, drawSession };
})();
