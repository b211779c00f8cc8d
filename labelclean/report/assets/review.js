// The review app: one card at a time, keyboard first, every decision saved at once.
(function () {
  'use strict';
  const $ = id => document.getElementById(id);
  const meta = JSON.parse($('meta').textContent);
  const token = document.querySelector('meta[name="labelclean-token"]').content;
  const classes = meta.classes, clusters = meta.clusters;
  // Keys 1-9 pick a class: by name when every class is a single digit (digits: 3 is "3"),
  // else by position among the first nine; "/" searches all of them.
  const byName = classes.every(c => /^[0-9]$/.test(c)) && new Set(classes).size === classes.length;
  const keyOf = i => byName ? classes[i] : (i < 9 ? String(i + 1) : null);
  const classOfKey = k => { const i = classes.findIndex((c, j) => keyOf(j) === k); return i < 0 ? null : i; };
  let rows = [], byId = new Map(), decisions = new Map(), loadedMore = false;
  let current = null;  // id of the sample on the card
  const undo = [];     // [{id, previous decision or null}]
  const traceCache = new Map();
  let pair = null;     // heatmap filter {given, suggested}
  // Why the card suggests its label: what the audit decided for the image.
  const BASIS = {keep: 'the audit keeps the given label', relabel: 'the audit relabeled to it',
    unlabel: "the audit's best guess (it unlabeled the image)"};

  function addRows(data) {
    const start = rows.length;
    data.id.forEach((id, k) => {
      const r = {id, order: start + k, path: data.path[k], given: classes[data.given[k]],
        suggested: classes[data.suggested[k]], network: classes[data.network[k]],
        cluster: clusters[data.cluster[k]],
        action: data.action[k], conf_given: data.conf_given[k], conf_pseudo: data.conf_pseudo[k],
        guard: data.guard ? data.guard[k] : null,
        crowd: data.votes ? {n: data.n_votes[k], agreement: data.agreement[k], votes: data.votes[k], tally: data.tally[k]} : null};
      rows.push(r); byId.set(id, r);
    });
    for (const [id, d] of Object.entries(data.decisions)) decisions.set(Number(id), d);
  }
  function get(url) {
    return fetch(url, {credentials: 'same-origin'}).then(r => {
      if (!r.ok) throw new Error(url + ': ' + r.status); return r.json(); });
  }

  // -- filters --------------------------------------------------------------------------
  function visible() {
    const cl = $('f-cluster').value, g = $('f-given').value, s = $('f-suggested').value;
    const by = $('f-conf').value, lo = parseFloat($('f-min').value), hi = parseFloat($('f-max').value);
    const undecided = $('f-undecided').checked, split = $('f-split').checked;
    return rows.filter(r => (!cl || r.cluster === cl) && (!g || r.given === g)
      && (!s || r.suggested === s) && (isNaN(lo) || r[by] >= lo) && (isNaN(hi) || r[by] <= hi)
      && (!undecided || !decisions.has(r.id) || r.id === current)
      && (!split || (r.crowd !== null && r.crowd.agreement < 1)));
  }
  function progress() {
    let decided = 0;
    for (const r of rows) if (decisions.has(r.id)) decided += 1;
    $('progress').replaceChildren('decided ', el('b', '', `${decided} / ${rows.length}`), ' to review');
    if (!loadedMore && meta.more_size) {
      $('progress').append(el('span', 'muted', ` (+ ${meta.more_size} ${meta.more_cluster} on demand)`));
    }
  }

  // -- the card -------------------------------------------------------------------------
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }
  function sparkline(t) {
    const svg = $('spark'); svg.replaceChildren();
    const n = t.given.length; if (!n) return;
    const ns = 'http://www.w3.org/2000/svg', W = 300, H = 70, pad = 4;
    const pts = a => a.map((v, i) => `${(pad + (W - 2 * pad) * (n > 1 ? i / (n - 1) : 0.5)).toFixed(1)},${(H - pad - (H - 2 * pad) * v).toFixed(1)}`).join(' ');
    const line = (a, color, width, dash) => { const p = document.createElementNS(ns, 'polyline');
      p.setAttribute('points', pts(a)); p.setAttribute('fill', 'none'); p.setAttribute('stroke', color);
      p.setAttribute('stroke-width', width); if (dash) p.setAttribute('stroke-dasharray', dash); svg.appendChild(p); };
    const mid = document.createElementNS(ns, 'line');
    mid.setAttribute('x1', pad); mid.setAttribute('x2', W - pad); mid.setAttribute('y1', H / 2); mid.setAttribute('y2', H / 2);
    mid.setAttribute('stroke', '#dee2e6'); svg.appendChild(mid);
    line(t.given, '#1c7ed6', 2.6); line(t.pseudo, '#2f9e44', 1.5, '4 3');
  }
  function showState(r) {
    const d = decisions.get(r.id), box = $('state'); box.replaceChildren();
    for (const b of document.querySelectorAll('button.chosen')) b.classList.remove('chosen');
    if (!d) { box.append(el('span', 'muted', 'undecided')); return; }
    const text = d.decision === 'drop' ? 'dropped' : `${d.decision}: ${d.label}`;
    box.append(el('span', 'done' + (d.decision === 'drop' ? ' drop' : ''), '\u2713 ' + text));
    const btn = {accept: 'do-accept', keep: 'do-keep', drop: 'do-drop'}[d.decision];
    if (btn) $(btn).classList.add('chosen');
    if (d.decision === 'relabel') { const b = document.querySelector(`#classes button[data-label="${CSS.escape(d.label)}"]`); if (b) b.classList.add('chosen'); }
  }
  function drawClasses(r) {
    const box = $('classes'); box.replaceChildren();
    classes.forEach((c, i) => {
      const key = keyOf(i); if (key === null) return;
      const b = el('button'); b.type = 'button'; b.dataset.label = c;
      b.append(el('kbd', '', key), ' ' + c);
      if (c === r.given) b.classList.add('is-given');
      if (c === r.suggested) b.classList.add('is-suggested');
      b.title = c === r.given ? 'the given label' : c === r.suggested ? 'the suggestion' : 'relabel to ' + c;
      b.addEventListener('click', () => choose(c));
      box.appendChild(b);
    });
  }
  function show(id) {
    const list = visible();
    $('empty').hidden = list.length > 0 || id !== null;
    $('card').hidden = id === null;
    current = id;
    drawStrip(list);
    $('matching').textContent = `${list.length} of ${rows.length} samples match the filters`;
    progress();
    if (id === null) return;
    const r = byId.get(id);
    const pos = list.findIndex(x => x.id === id);
    $('position').textContent = `sample ${pos + 1} of ${list.length} \u00b7 report row ${id}`;
    $('image').src = `/thumb/${id}`; $('image').alt = r.path;
    $('full').href = `/image/${id}`;
    $('path').textContent = r.path;
    // the suggestion is the audit's decision; the network's guess is evidence beside it
    $('given').textContent = r.given; $('suggested').textContent = r.suggested;
    $('basis').textContent = BASIS[r.action] || '';
    $('network').textContent = r.network;
    $('conf-given').textContent = `confidence ${r.conf_given.toFixed(2)}`;
    $('conf-pseudo').textContent = `confidence ${r.conf_pseudo.toFixed(2)}`;
    $('cluster').textContent = r.cluster; $('cluster').className = 'c-' + r.cluster;
    $('cluster-chip').className = 'chip chip-' + r.cluster;
    $('meaning').textContent = meta.meaning[r.cluster] || '';
    $('action').textContent = r.action;
    $('guard-wrap').hidden = !r.guard; $('guard').textContent = r.guard || '';
    $('crowd').hidden = !r.crowd;
    if (r.crowd) {
      $('tally').textContent = r.crowd.tally;
      $('agreement').textContent = `(${Math.round(100 * r.crowd.agreement)}% of ${r.crowd.n} vote${r.crowd.n === 1 ? '' : 's'} for the given label)`;
      $('votes').textContent = 'votes: ' + r.crowd.votes;
    }
    $('accept-label').textContent = r.suggested; $('keep-label').textContent = r.given;
    drawClasses(r); showState(r);
    const t = traceCache.get(id);
    if (t) sparkline(t);
    else { $('spark').replaceChildren(); get(`/api/trace/${id}`).then(x => { traceCache.set(id, x); if (current === id) sparkline(x); }); }
  }
  function drawStrip(list) {
    const strip = $('strip'); strip.replaceChildren();
    const at = Math.max(0, list.findIndex(x => x.id === current));
    for (const r of list.slice(Math.max(0, at - 3), at + 15)) {
      const a = el('a'); const im = el('img'); im.src = `/thumb/${r.id}`; im.alt = r.path; im.loading = 'lazy';
      a.title = `${r.path}: given ${r.given}, suggested ${r.suggested}, network's guess ${r.network} (${r.cluster})`;
      a.appendChild(im);
      const d = decisions.get(r.id);
      if (d) a.classList.add(d.decision === 'drop' ? 'dropped' : 'decided', 'decided');
      if (r.id === current) a.classList.add('current');
      a.addEventListener('click', () => show(r.id));
      strip.appendChild(a);
    }
  }

  // -- moving ----------------------------------------------------------------------------
  function step(delta) {
    const list = visible(); if (!list.length) return show(null);
    const cur = byId.get(current);
    let i = cur ? list.findIndex(x => x.id === current) : -1;
    if (i < 0) i = delta > 0 ? list.findIndex(x => !cur || x.order > cur.order) - 1 : list.length;
    i = Math.min(list.length - 1, Math.max(0, i + delta));
    show(list[i].id);
  }
  function nextUndecided() {
    const list = visible(), cur = byId.get(current);
    const after = list.find(x => cur && x.order > cur.order && !decisions.has(x.id));
    const any = after || list.find(x => !decisions.has(x.id));
    show(any ? any.id : (current !== null && list.some(x => x.id === current) ? current : (list[0] ? list[0].id : null)));
  }

  // -- deciding --------------------------------------------------------------------------
  function post(id, decision, label) {
    return fetch('/api/decision', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-Labelclean-Token': token},
      body: JSON.stringify({id, decision, label})})
      .then(r => r.json().then(j => { if (!r.ok) throw new Error(j.error || r.status); return j; }))
      .then(j => { if (j.decision) decisions.set(id, j.decision); else decisions.delete(id);
        $('saved').textContent = `saved to ${meta.decisions_file}`; return j; })
      .catch(err => { $('saved').textContent = 'NOT SAVED: ' + err.message; throw err; });
  }
  function decide(decision, label) {
    if (current === null) return;
    const id = current, r = byId.get(id);
    if (decision === 'relabel' && label === r.suggested) decision = 'accept';
    else if (decision === 'relabel' && label === r.given) decision = 'keep';
    undo.push({id, previous: decisions.get(id) || null});
    post(id, decision, decision === 'relabel' ? label : null).then(nextUndecided, () => undo.pop());
  }
  const choose = label => decide('relabel', label);
  function undoLast() {
    const last = undo.pop(); if (!last) return;
    const p = last.previous;
    post(last.id, p ? p.decision : null, p && p.decision === 'relabel' ? p.label : null).then(() => show(last.id));
  }

  // -- class search ----------------------------------------------------------------------
  function matches() {
    const q = $('class-search').value.trim().toLowerCase();
    return q ? classes.filter(c => c.toLowerCase().includes(q))
      .sort((a, b) => a.toLowerCase().indexOf(q) - b.toLowerCase().indexOf(q)).slice(0, 12) : [];
  }
  function drawMatches() {
    const ul = $('class-matches'); ul.replaceChildren();
    matches().forEach((c, i) => { const li = el('li', i === 0 ? 'top' : '', c);
      li.addEventListener('mousedown', e => { e.preventDefault(); pick(c); }); ul.appendChild(li); });
  }
  function pick(c) { $('class-search').value = ''; drawMatches(); $('class-search').blur(); choose(c); }
  $('class-search').addEventListener('input', drawMatches);
  $('class-search').addEventListener('keydown', e => {
    if (e.key === 'Enter') { const m = matches(); if (m.length) pick(m[0]); e.preventDefault(); }
    if (e.key === 'Escape') { $('class-search').value = ''; drawMatches(); $('class-search').blur(); }
    e.stopPropagation();
  });

  // -- keys and buttons ------------------------------------------------------------------
  document.addEventListener('keydown', e => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    const k = e.key;
    if (k === 'a') decide('accept');
    else if (k === 'k') decide('keep');
    else if (k === 'd') decide('drop');
    else if (k === 'u') undoLast();
    else if (k === 'j' || k === 'ArrowRight' || k === 'ArrowDown') step(1);
    else if (k === 'l' || k === 'ArrowLeft' || k === 'ArrowUp') step(-1);
    else if (k === '/') $('class-search').focus();
    else if (classOfKey(k) !== null && current !== null) choose(classes[classOfKey(k)]);
    else return;
    e.preventDefault();
  });
  $('do-accept').addEventListener('click', () => decide('accept'));
  $('do-keep').addEventListener('click', () => decide('keep'));
  $('do-drop').addEventListener('click', () => decide('drop'));
  $('do-undo').addEventListener('click', undoLast);
  $('next').addEventListener('click', () => step(1));
  $('prev').addEventListener('click', () => step(-1));
  $('digit-keys').textContent = byName ? '0\u20139' : '1\u20139';
  const refilter = () => { pair = null; markPair(); nextUndecided(); };
  ['f-cluster', 'f-given', 'f-suggested', 'f-conf', 'f-min', 'f-max', 'f-undecided', 'f-split'].forEach(id =>
    $(id).addEventListener('change', refilter));
  $('f-clear').addEventListener('click', () => {
    for (const id of ['f-cluster', 'f-given', 'f-suggested']) $(id).value = '';
    $('f-min').value = 0; $('f-max').value = 1; $('f-undecided').checked = false;
    $('f-split').checked = false; refilter(); });
  function markPair() {
    for (const td of document.querySelectorAll('#heat td.on')) td.classList.remove('on');
    if (!pair) return;
    const td = document.querySelector(`#heat td[data-given="${CSS.escape(pair.given)}"][data-other="${CSS.escape(pair.suggested)}"]`);
    if (td) td.classList.add('on');
  }
  for (const td of document.querySelectorAll('#heat td.pick')) td.addEventListener('click', () => {
    $('f-given').value = td.dataset.given; $('f-suggested').value = td.dataset.other;
    nextUndecided(); pair = {given: td.dataset.given, suggested: td.dataset.other}; markPair(); });
  const more = $('load-more');
  more.hidden = !meta.more_size;
  more.addEventListener('click', () => get('/api/rows?part=more').then(d => {
    addRows(d); loadedMore = true; more.hidden = true;
    const cl = $('f-cluster'); if (![...cl.options].some(o => o.value === meta.more_cluster)) {
      const o = el('option', '', meta.more_cluster); o.value = meta.more_cluster; cl.appendChild(o); }
    nextUndecided(); }));

  get('/api/rows?part=queue').then(d => { addRows(d); nextUndecided(); })
    .catch(err => { $('progress').textContent = 'cannot load the queue: ' + err.message; });
})();
