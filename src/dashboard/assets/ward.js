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
    V.morph(list, alarms.map(({ bed, alarm }) => V.renderAlarm(bed, alarm)));
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
  V.onMe(() => { if (V.ward.order.length) render(); });
})();
