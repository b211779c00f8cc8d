// The review app: a card at a time or a grid in bulk, keyboard first, every decision saved.
//
// A key acts on the card it was pressed on: the decision is taken here at once (the card
// moves on before the save returns) and saved in order behind it, many to a request when
// keys come faster than the round trip; a save that fails undoes what it had not saved and
// says so. A bulk (the grid's selection, a heatmap cell) is one request, written whole or
// not at all, and one step of undo.
(function () {
  'use strict';
  const $ = id => document.getElementById(id);
  const meta = JSON.parse($('meta').textContent);
  const token = document.querySelector('meta[name="labelclean-token"]').content;
  const classes = meta.classes, clusters = meta.clusters, parts = meta.parts;
  // the key of each class (labelclean.review.state.class_keys): 1-9 and 0, or the digit names
  const keyOf = i => meta.keys[i];
  const classOfKey = k => { const i = meta.keys.indexOf(k); return i < 0 ? null : i; };
  let rows = [], byId = new Map(), loadedMore = false;
  const decisions = new Map();  // what the page shows: saved, and taken but still being saved
  const saved = new Map();      // what the decisions file has
  let current = null;  // id of the sample on the card
  const undo = [];     // steps: {seq, items: [{id, previous decision or null}]}
  const pending = [];  // changes not yet sent, in order: {seq, id, decision, label}
  let inflight = null, seq = 0;
  const traceCache = new Map();
  let pair = null;     // heatmap cell {given, suggested}
  let view = 'card';
  const selected = new Set();
  let anchor = null;   // the last clicked tile, for shift-click ranges
  const GRID_PAGE = 300;
  let gridLimit = GRID_PAGE;
  // Why the card suggests its label: what the audit decided for the image.
  const BASIS = {keep: 'the audit keeps the given label', relabel: 'the audit relabeled to it',
    unlabel: "the audit's best guess (it unlabeled the image)"};

  function addRows(data) {
    const start = rows.length;
    data.id.forEach((id, k) => {
      const r = {id, order: start + k, path: data.path[k], given: classes[data.given[k]],
        suggested: classes[data.suggested[k]], network: classes[data.network[k]],
        cluster: clusters[data.cluster[k]], part: parts[data.part[k]],
        action: data.action[k], conf_given: data.conf_given[k], conf_pseudo: data.conf_pseudo[k],
        guard: data.guard ? data.guard[k] : null,
        crowd: data.votes ? {n: data.n_votes[k], agreement: data.agreement[k], votes: data.votes[k], tally: data.tally[k]} : null};
      rows.push(r); byId.set(id, r);
    });
    for (const [id, d] of Object.entries(data.decisions)) { decisions.set(Number(id), d); saved.set(Number(id), d); }
  }
  function get(url) {
    return fetch(url, {credentials: 'same-origin'}).then(r => {
      if (!r.ok) throw new Error(url + ': ' + r.status); return r.json(); });
  }
  function el(tag, cls, text) { const e = document.createElement(tag); if (cls) e.className = cls; if (text !== undefined) e.textContent = text; return e; }

  // -- filters --------------------------------------------------------------------------
  const AUDIT = {flagged: r => r.part === 'flagged', relabel: r => r.action === 'relabel',
    unlabel: r => r.action === 'unlabel', disputed: r => r.part === 'disputed', keep: r => r.action === 'keep'};
  function visible() {
    const act = $('f-action').value, cl = $('f-cluster').value, g = $('f-given').value, s = $('f-suggested').value;
    const by = $('f-conf').value, lo = parseFloat($('f-min').value), hi = parseFloat($('f-max').value);
    const dec = $('f-decided').value, split = $('f-split').checked;
    const keep = id => view === 'card' && id === current;  // a card just decided stays on
    return rows.filter(r => (!act || AUDIT[act](r)) && (!cl || r.cluster === cl) && (!g || r.given === g)
      && (!s || r.suggested === s) && (isNaN(lo) || r[by] >= lo) && (isNaN(hi) || r[by] <= hi)
      && (dec !== 'undecided' || !decisions.has(r.id) || keep(r.id))
      && (dec !== 'decided' || decisions.has(r.id))
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
  function why(r) {
    if (r.part === 'flagged') return r.action === 'relabel' ? 'flagged: the audit relabeled it' : 'flagged: the audit unlabeled it';
    if (r.part === 'rest') return 'kept, undisputed';
    const against = [];
    if (r.network !== r.given) against.push(`the network guesses ${r.network}`);
    if (r.guard === 'partly_disputed' || r.guard === 'semi_agrees') against.push(`a guard kept it (${r.guard})`);
    if (r.crowd && r.crowd.agreement < 1) against.push('the crowd split');
    return 'kept, disputed: ' + against.join('; ');
  }
  function showState(r) {
    const d = decisions.get(r.id), box = $('state'); box.replaceChildren();
    for (const b of document.querySelectorAll('#card button.chosen')) b.classList.remove('chosen');
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
      const key = keyOf(i); if (key === null) return;  // beyond the tenth: the search
      const b = el('button'); b.type = 'button'; b.dataset.label = c;
      b.append(el('kbd', '', key), el('span', 'name', c));
      if (c === r.given) b.classList.add('is-given');
      if (c === r.suggested) b.classList.add('is-suggested');
      b.title = c === r.given ? 'the given label' : c === r.suggested ? 'the suggestion' : 'relabel to ' + c;
      b.addEventListener('click', () => choose(c));
      box.appendChild(b);
    });
  }
  function show(id) {
    current = id;
    if (view === 'grid') return drawGrid();
    const list = visible();
    $('empty').hidden = list.length > 0 || id !== null;
    $('card').hidden = id === null;
    drawStrip(list);
    $('matching').textContent = `${list.length} of ${rows.length} samples match the filters`;
    progress();
    if (id === null) return;
    const r = byId.get(id);
    const pos = list.findIndex(x => x.id === id);
    $('position').textContent = `sample ${pos + 1} of ${list.length} \u00b7 report row ${id}`;
    $('why').textContent = why(r); $('why').className = 'why why-' + r.part;
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
  function tile(r, tag) {
    const a = el(tag, 'tile'); a.dataset.id = r.id;
    const im = el('img'); im.src = `/thumb/${r.id}`; im.alt = r.path; im.loading = 'lazy'; a.appendChild(im);
    a.title = `${r.path}: given ${r.given}, suggested ${r.suggested}, network's guess ${r.network} (${r.cluster}; ${why(r)})`;
    const d = decisions.get(r.id);
    if (d) a.classList.add(d.decision === 'drop' ? 'dropped' : 'decided', 'decided');
    return [a, d];
  }
  function drawStrip(list) {
    const strip = $('strip'); strip.replaceChildren();
    const at = Math.max(0, list.findIndex(x => x.id === current));
    for (const r of list.slice(Math.max(0, at - 3), at + 15)) {
      const [a] = tile(r, 'a');
      if (r.id === current) a.classList.add('current');
      a.addEventListener('click', () => show(r.id));
      strip.appendChild(a);
    }
  }

  // -- the grid --------------------------------------------------------------------------
  function drawGrid() {
    const list = visible(), grid = $('grid'); grid.replaceChildren();
    const shown = new Set(list.map(r => r.id));
    for (const id of [...selected]) if (!shown.has(id)) selected.delete(id);
    $('empty').hidden = list.length > 0;
    $('matching').textContent = `${list.length} of ${rows.length} samples match the filters`;
    progress();
    for (const r of list.slice(0, gridLimit)) {
      const [a, d] = tile(r, 'figure');
      if (selected.has(r.id)) a.classList.add('selected');
      const cap = el('figcaption');
      if (r.given === r.suggested) cap.append(el('span', 'same', r.given), el('span', 'muted', ' kept'));
      else cap.append(el('span', 'given', r.given), ' \u2192 ', el('span', 'suggested', r.suggested));
      // the label only where it is not the one the caption shows already
      if (d) cap.append(el('div', 'done', d.decision === 'drop' ? '\u2713 dropped'
        : d.decision === 'relabel' ? `\u2713 relabel: ${d.label}` : `\u2713 ${d.decision}`));
      a.appendChild(cap);
      grid.appendChild(a);
    }
    const more = list.length - Math.min(gridLimit, list.length);
    $('grid-more').hidden = more <= 0;
    $('grid-more').textContent = `show ${Math.min(more, GRID_PAGE)} more (of ${more})`;
    $('grid-note').textContent = list.length > gridLimit
      ? `showing ${gridLimit} of ${list.length}; select all takes all ${list.length}` : '';
    drawSelection();
  }
  function drawSelection() {
    for (const t of document.querySelectorAll('#grid .tile')) t.classList.toggle('selected', selected.has(Number(t.dataset.id)));
    $('selected-count').textContent = `${selected.size} selected`;
    for (const id of ['bulk-accept', 'bulk-keep', 'bulk-relabel', 'bulk-drop', 'bulk-forget']) $(id).disabled = !selected.size;
  }
  $('grid').addEventListener('click', e => {
    const t = e.target.closest('.tile'); if (!t) return;
    const id = Number(t.dataset.id), list = visible().map(r => r.id);
    if (e.shiftKey && anchor !== null && list.includes(anchor)) {
      const [i, j] = [list.indexOf(anchor), list.indexOf(id)].sort((x, y) => x - y);
      for (const x of list.slice(i, j + 1)) selected.add(x);
    } else if (selected.has(id)) selected.delete(id);
    else selected.add(id);
    anchor = id; drawSelection(); e.preventDefault();
  });
  $('grid').addEventListener('dblclick', e => {
    const t = e.target.closest('.tile'); if (t) { setView('card'); show(Number(t.dataset.id)); }
  });
  $('grid-more').addEventListener('click', () => { gridLimit += GRID_PAGE; drawGrid(); });
  $('select-all').addEventListener('click', () => { for (const r of visible()) selected.add(r.id); drawSelection(); });
  $('select-undecided').addEventListener('click', () => {
    selected.clear(); for (const r of visible()) if (!decisions.has(r.id)) selected.add(r.id); drawSelection(); });
  $('select-none').addEventListener('click', () => { selected.clear(); drawSelection(); });
  function bulk(decision, label) {
    if (!selected.size) return;
    const order = new Map(visible().map((r, k) => [r.id, k]));
    const ids = [...selected].sort((x, y) => order.get(x) - order.get(y));
    take(ids.map(id => ({id, decision, label: decision === 'relabel' ? label : null})));
  }
  $('bulk-accept').addEventListener('click', () => bulk('accept'));
  $('bulk-keep').addEventListener('click', () => bulk('keep'));
  $('bulk-drop').addEventListener('click', () => bulk('drop'));
  $('bulk-forget').addEventListener('click', () => bulk(null));
  $('bulk-relabel').addEventListener('click', () => bulk('relabel', $('bulk-label').value));
  $('bulk-undo').addEventListener('click', () => undoLast());
  function setView(v) {
    if (v === view) return;
    view = v;
    $('card-view').hidden = v !== 'card'; $('grid-view').hidden = v !== 'grid';
    $('view-card').classList.toggle('on', v === 'card'); $('view-grid').classList.toggle('on', v === 'grid');
    if (v === 'grid') { gridLimit = GRID_PAGE; drawGrid(); }
    else if (current !== null && visible().some(r => r.id === current)) show(current);
    else nextUndecided();
  }
  $('view-card').addEventListener('click', () => setView('card'));
  $('view-grid').addEventListener('click', () => setView('grid'));

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
    if (view === 'grid') return drawGrid();
    const list = visible(), cur = byId.get(current);
    const after = list.find(x => cur && x.order > cur.order && !decisions.has(x.id));
    const any = after || list.find(x => !decisions.has(x.id));
    show(any ? any.id : (current !== null && list.some(x => x.id === current) ? current : (list[0] ? list[0].id : null)));
  }

  // -- deciding and saving ---------------------------------------------------------------
  // A decision is taken here at once and saved behind it, in order. `items` are
  // [{id, decision, label}] (decision null: undecided again); with `step` false (an undo)
  // it is not itself a step of undo.
  function normal(it) {
    const r = byId.get(it.id);
    let {decision, label} = it;
    if (decision === 'relabel' && label === r.suggested) decision = 'accept';
    else if (decision === 'relabel' && label === r.given) decision = 'keep';
    if (decision === 'accept') label = r.suggested;
    else if (decision === 'keep') label = r.given;
    else if (decision !== 'relabel') label = null;
    return {id: it.id, decision, label};
  }
  function take(items, step = true) {
    if (!items.length) return;
    items = items.map(normal);
    const s = ++seq;
    if (step) undo.push({seq: s, items: items.map(it => ({id: it.id, previous: decisions.get(it.id) || null}))});
    for (const it of items) {
      if (it.decision) decisions.set(it.id, {decision: it.decision, label: it.label, time: ''});
      else decisions.delete(it.id);
      pending.push({seq: s, id: it.id, decision: it.decision, label: it.decision === 'relabel' ? it.label : null});
    }
    if (view === 'grid') drawGrid();
    if (pair) markPair();
    status();
    flush();
  }
  function status(text) {
    const n = pending.length + (inflight ? inflight.length : 0);
    $('saved').textContent = text || (n ? `saving ${n}\u2026` : `saved to ${meta.decisions_file}`);
  }
  function flush() {
    if (inflight || !pending.length) return;
    const batch = pending.splice(0, pending.length);
    inflight = batch;
    fetch('/api/decisions', {method: 'POST', credentials: 'same-origin',
      headers: {'Content-Type': 'application/json', 'X-Labelclean-Token': token},
      body: JSON.stringify({decisions: batch.map(({id, decision, label}) => ({id, decision, label}))})})
      .then(r => r.json().catch(() => ({error: `the server answered ${r.status}`}))
        .then(j => { if (!r.ok) throw new Error(j.error || r.status); return j; }))
      .then(j => {
        for (const [id, d] of Object.entries(j.decisions)) { if (d) saved.set(Number(id), d); else saved.delete(Number(id)); }
        $('error').hidden = true;
        inflight = null; status(); flush();
      }, err => failed(batch, err));
  }
  // Nothing of a failed request was written (all or nothing): what it and the changes queued
  // behind it would have done is undone on the page, so the page shows what the file has.
  function failed(batch, err) {
    const lost = [...batch, ...pending.splice(0, pending.length)];
    inflight = null;
    const first = lost[0].seq;
    while (undo.length && undo[undo.length - 1].seq >= first) undo.pop();
    const ids = new Set(lost.map(x => x.id));
    for (const id of ids) { if (saved.has(id)) decisions.set(id, saved.get(id)); else decisions.delete(id); }
    const box = $('error');
    box.textContent = `NOT SAVED: ${err.message}. ${ids.size} decision${ids.size === 1 ? ' was' : 's were'} not taken; the page shows what the decisions file has.`;
    box.hidden = false;
    status('NOT SAVED (see above)');
    if (view === 'grid') drawGrid(); else show(lost[0].id);
  }
  function decide(decision, label) {
    if (view === 'grid') return bulk(decision, label);
    if (current === null) return;
    take([{id: current, decision, label}]);
    nextUndecided();  // at once: the next key acts on the next card
  }
  const choose = label => decide('relabel', label);
  function undoLast() {
    const last = undo.pop(); if (!last) return;
    take(last.items.map(({id, previous: p}) => ({id, decision: p ? p.decision : null, label: p ? p.label : null})), false);
    if (view === 'card') show(last.items[0].id);
    else { selected.clear(); for (const it of last.items) selected.add(it.id); drawGrid(); }
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
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'SELECT' || t.tagName === 'TEXTAREA')) {
      if (e.key === 'Escape') t.blur();
      return;
    }
    if (view === 'grid' && (e.ctrlKey || e.metaKey) && e.key === 'a') {
      for (const r of visible()) selected.add(r.id); drawSelection(); e.preventDefault(); return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const k = e.key;
    if (k === 'a') decide('accept');
    else if (k === 'k') decide('keep');
    else if (k === 'd') decide('drop');
    else if (k === 'u') undoLast();
    else if (k === 'g') setView(view === 'card' ? 'grid' : 'card');
    else if (k === 'Escape' && view === 'grid') { selected.clear(); drawSelection(); }
    else if (view === 'card' && (k === 'j' || k === 'ArrowRight' || k === 'ArrowDown')) step(1);
    else if (view === 'card' && (k === 'l' || k === 'ArrowLeft' || k === 'ArrowUp')) step(-1);
    else if (k === '/' && view === 'card') $('class-search').focus();
    else if (k === '/' && view === 'grid') $('bulk-label').focus();
    else if (classOfKey(k) !== null && (current !== null || view === 'grid')) choose(classes[classOfKey(k)]);
    else return;
    e.preventDefault();
  });
  $('do-accept').addEventListener('click', () => decide('accept'));
  $('do-keep').addEventListener('click', () => decide('keep'));
  $('do-drop').addEventListener('click', () => decide('drop'));
  $('do-undo').addEventListener('click', undoLast);
  $('next').addEventListener('click', () => step(1));
  $('prev').addEventListener('click', () => step(-1));
  const digits = meta.keys.every((k, i) => k === classes[i]);
  $('digit-keys').textContent = digits ? '0\u20139' : classes.length > 9 ? '1\u20139, 0' : `1\u2013${classes.length}`;
  // a new filter starts a new selection: a bulk acts only on what was chosen in this view
  const refilter = () => { pair = null; markPair(); gridLimit = GRID_PAGE; selected.clear(); nextUndecided(); };
  ['f-action', 'f-cluster', 'f-given', 'f-suggested', 'f-conf', 'f-min', 'f-max', 'f-decided', 'f-split'].forEach(id =>
    $(id).addEventListener('change', refilter));
  $('f-clear').addEventListener('click', () => {
    for (const id of ['f-action', 'f-cluster', 'f-given', 'f-suggested', 'f-decided']) $(id).value = '';
    $('f-min').value = 0; $('f-max').value = 1;
    $('f-split').checked = false; refilter(); });

  // -- the heatmap: a cell filters to its pair, and can be accepted whole -------------------
  const cellRows = () => rows.filter(r => r.given === pair.given && r.suggested === pair.suggested);
  function markPair() {
    for (const td of document.querySelectorAll('#heat td.on')) td.classList.remove('on');
    $('cell-bar').hidden = !pair;
    if (!pair) return;
    const td = document.querySelector(`#heat td[data-given="${CSS.escape(pair.given)}"][data-other="${CSS.escape(pair.suggested)}"]`);
    if (td) td.classList.add('on');
    const all = cellRows(), open = all.filter(r => !decisions.has(r.id)).length;
    $('cell-name').replaceChildren('given ', el('span', 'given', pair.given), ' \u2192 suggested ',
      el('span', 'suggested', pair.suggested), `: ${all.length} image${all.length === 1 ? '' : 's'}`);
    $('accept-cell').textContent = open ? `accept the ${open} undecided of this cell` : 'every image of this cell is decided';
    $('accept-cell').disabled = !open;
  }
  for (const td of document.querySelectorAll('#heat td.pick')) td.addEventListener('click', () => {
    $('f-given').value = td.dataset.given; $('f-suggested').value = td.dataset.other;
    gridLimit = GRID_PAGE; selected.clear(); nextUndecided(); pair = {given: td.dataset.given, suggested: td.dataset.other}; markPair(); });
  $('accept-cell').addEventListener('click', () => {
    if (!pair) return;
    take(cellRows().filter(r => !decisions.has(r.id)).map(r => ({id: r.id, decision: 'accept'})));
    markPair(); if (view === 'card') nextUndecided();
  });
  const more = $('load-more');
  more.hidden = !meta.more_size;
  more.addEventListener('click', () => get('/api/rows?part=more').then(d => {
    addRows(d); loadedMore = true; more.hidden = true;
    nextUndecided(); }));

  // closing the tab while decisions are still on their way: the browser asks first
  window.addEventListener('beforeunload', e => { if (inflight || pending.length) { e.preventDefault(); e.returnValue = ''; } });

  get('/api/rows?part=queue').then(d => { addRows(d); nextUndecided(); })
    .catch(err => { $('progress').textContent = 'cannot load the queue: ' + err.message; });
})();
