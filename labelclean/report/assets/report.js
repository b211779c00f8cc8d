// The report page: sortable tables, and the sample table's filters, pages and CSV export.
// Without JavaScript the page still shows the first page of the sample table.
(function () {
  'use strict';
  const $ = id => document.getElementById(id);
  const cmp = (x, y) => (x === y ? 0 : x === null ? 1 : y === null ? -1 : x < y ? -1 : 1);
  // Static tables: click a header to sort by it (numbers by value, text by text).
  document.querySelectorAll('table.sortable').forEach(table => {
    const heads = Array.from(table.tHead.rows[0].cells);
    heads.forEach((th, i) => th.addEventListener('click', () => {
      const asc = th.dataset.dir !== 'asc';
      heads.forEach(h => delete h.dataset.dir);
      th.dataset.dir = asc ? 'asc' : 'desc';
      const key = row => { const c = row.cells[i]; const v = c.dataset.v ?? c.textContent;
        const x = Number(v); return v !== '' && !isNaN(x) ? x : v.toLowerCase(); };
      const body = table.tBodies[0];
      Array.from(body.rows).sort((a, b) => cmp(key(a), key(b)) * (asc ? 1 : -1))
        .forEach(r => body.appendChild(r));
    }));
  });
  // The sample table: filter, sort, page, export.
  const data = JSON.parse($('rows').textContent);
  const thumbs = JSON.parse($('thumbs').textContent);
  const cols = JSON.parse($('columns').textContent);
  const info = JSON.parse($('table-info').textContent);
  const per = info.per_page;
  let sortCol = null, asc = true, page = 0, pair = null;
  function visible() {
    const text = $('f-text').value.toLowerCase(), cl = $('f-cluster').value;
    const ac = $('f-action').value, cls = $('f-class').value, by = $('f-conf').value;
    const lo = parseFloat($('f-min').value), hi = parseFloat($('f-max').value);
    const rows = data.filter(r => (!cl || r.cluster === cl) && (!ac || r.action === ac)
      && (!cls || r.given_label === cls || r.suggested_label === cls || r.pseudo_label === cls)
      && (!pair || (r.given_label === pair[0] && r.clean_label === pair[1]))
      && (isNaN(lo) || r[by] >= lo) && (isNaN(hi) || r[by] <= hi)
      && (!text || r.path.toLowerCase().includes(text)));
    if (sortCol) rows.sort((a, b) => cmp(a[sortCol], b[sortCol]) * (asc ? 1 : -1));
    return rows;
  }
  function cell(v) {
    const td = document.createElement('td');
    td.textContent = v === null ? '' : typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(3) : v;
    return td;
  }
  // suggested_label is the one label proposed (the audit's decision); pseudo_label, the
  // network's guess, is evidence and not marked as a suggestion
  const LABEL_CLASS = {given_label: 'given', suggested_label: 'suggested', clean_label: 'suggested'};
  function draw() {
    const rows = visible(), body = $('tbody');
    const pages = Math.max(1, Math.ceil(rows.length / per));
    page = Math.min(page, pages - 1);
    body.replaceChildren();
    for (const r of rows.slice(page * per, (page + 1) * per)) {
      const tr = document.createElement('tr'), td = document.createElement('td');
      if (thumbs[r.path]) { const im = document.createElement('img'); im.src = thumbs[r.path]; im.alt = ''; im.dataset.path = r.path; td.appendChild(im); }
      else { td.textContent = '-'; td.title = 'no thumbnail'; }
      tr.appendChild(td);
      for (const c of cols) {
        const d = cell(r[c]);
        if (typeof r[c] !== 'number') d.className = 'text';
        if (c === 'cluster') { d.className += ' c-' + r[c]; d.title = (info.cluster_names || {})[r[c]] || ''; }
        if (c === 'path') { d.className += ' path'; d.title = r[c]; }
        if (LABEL_CLASS[c] && r[c] !== null) d.className += ' ' + LABEL_CLASS[c];
        if (typeof r[c] === 'string' && !d.title) d.title = r[c];  // a name cut by its column, whole
        if (c === 'given_label') d.className += ' given-' + r.action;  // coloured by what the audit did
        tr.appendChild(d);
      }
      body.appendChild(tr);
    }
    const first = rows.length ? page * per + 1 : 0, last = Math.min(rows.length, (page + 1) * per);
    $('count').textContent = `rows ${first}-${last} of ${rows.length} (page ${page + 1} of ${pages})`;
    $('count2').textContent = $('count').textContent;
    $('prev').disabled = $('prev2').disabled = page === 0;
    $('next').disabled = $('next2').disabled = page >= pages - 1;
    $('export').textContent = `Export ${rows.length} rows as CSV`;
    // Kept samples are sampled: say so whenever the selection can reach the cut.
    const reachesCut = info.kept_shown < info.kept_total
      && ($('f-action').value === 'keep' || rows.some(r => r.action === 'keep'));
    $('cut').hidden = !reachesCut;
    $('pair').hidden = !pair;
    if (pair) $('pair-text').textContent = `given ${pair[0]} \u2192 clean ${pair[1]}`;
    document.querySelectorAll('#samples th[data-col]').forEach(th => {
      th.dataset.dir = th.dataset.col === sortCol ? (asc ? 'asc' : 'desc') : ''; });
  }
  document.querySelectorAll('#samples th[data-col]').forEach(th => th.addEventListener('click', () => {
    const c = th.dataset.col; asc = sortCol === c ? !asc : true; sortCol = c; draw(); }));
  ['f-text', 'f-cluster', 'f-action', 'f-class', 'f-conf', 'f-min', 'f-max'].forEach(id =>
    $(id).addEventListener('input', () => { page = 0; draw(); }));
  ['prev', 'prev2'].forEach(id => $(id).addEventListener('click', () => { page -= 1; draw(); }));
  ['next', 'next2'].forEach(id => $(id).addEventListener('click', () => { page += 1; draw(); }));
  // A heatmap cell filters the table to that given -> clean pair.
  document.querySelectorAll('#heat td.pick').forEach(td => td.addEventListener('click', () => {
    pair = [td.dataset.given, td.dataset.other]; page = 0; draw();
    $('samples').scrollIntoView(); }));
  $('pair-clear').addEventListener('click', () => { pair = null; page = 0; draw(); });
  $('export').addEventListener('click', () => {
    // A text a spreadsheet would run as a formula gets a ' in front, one starting with ' too
    // (labelclean's readers undo it): the rule of labelclean/_csv.py, which says why.
    const esc = v => {
      const formula = typeof v === 'string' && /^[=+\-@\t\r']/.test(v)
        && !/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v);
      v = v === null || v === undefined ? '' : (formula ? "'" : '') + String(v);
      return /[",\r\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    const head = cols.concat(['new_label']);
    const lines = [head.join(',')].concat(visible().map(r => head.map(c => esc(r[c])).join(',')));
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([lines.join('\n') + '\n'], {type: 'text/csv'}));
    a.download = 'labelclean-selection.csv';
    document.body.appendChild(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  });
  // The sticky bar: in-page links and sticky headers stop below it, whatever its height.
  const bar = document.querySelector('nav');
  const fit = () => document.documentElement.style.setProperty('--bar', bar.offsetHeight + 'px');
  fit(); window.addEventListener('resize', fit);
  // A click on an image opens it large: the tile's larger copy where the page has one
  // (data-full), else the image itself enlarged (small sources are embedded whole).
  const zoom = document.createElement('dialog'), big = document.createElement('img');
  const caption = document.createElement('p'), close = document.createElement('button');
  zoom.id = 'zoom'; zoom.className = 'zoom'; big.alt = '';
  close.type = 'button'; close.textContent = 'close (Esc)';
  zoom.append(close, big, caption); document.body.appendChild(zoom);
  zoom.addEventListener('click', () => zoom.close());
  function size() {  // at least 320 px (or its full size), within the window
    const w = big.naturalWidth, h = big.naturalHeight;
    if (!w || !h) return;
    const fitTo = Math.min(Math.max(320, w, h), window.innerWidth * 0.9, window.innerHeight * 0.8);
    const k = fitTo / Math.max(w, h);
    big.width = Math.round(w * k); big.height = Math.round(h * k);
  }
  document.addEventListener('click', ev => {
    const im = ev.target;
    if (!(im instanceof HTMLImageElement) || zoom.contains(im)) return;
    const fig = im.closest('figure');
    caption.textContent = (fig && fig.title) || im.dataset.path || im.alt || '';
    big.className = im.dataset.full ? '' : 'pixel';  // a photo's copy smooth, a small image crisp
    big.onload = size; big.src = im.dataset.full || im.src;
    if (big.complete) size();
    if (!zoom.open) zoom.showModal();
  });
  document.querySelectorAll('.js-only').forEach(e => { e.hidden = false; });
  document.querySelectorAll('.no-js').forEach(e => { e.hidden = true; });
  draw();
})();
