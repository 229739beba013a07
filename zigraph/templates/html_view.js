// zigraph HTML view: reads the JSON the page carries, draws only the open part of the cluster tree.
(function () {
  'use strict';
  const D = JSON.parse(document.getElementById('zigraph-data').textContent);
  const PALETTE = ['#8dd3c7', '#ffffb3', '#bebada', '#d9f0a3', '#80b1d3', '#fdb462', '#b3de69', '#fccde5',
    '#bc80bd', '#ccebc5', '#ffed6f', '#a6cee3', '#b2df8a', '#fdbf6f', '#cab2d6', '#e5c494'];
  const GREY = '#d9d9d9', UNKNOWN = '#ff6b6b', NONE = '#ffffff';
  const START_BUDGET = 60;   // operators and closed boxes drawn when the page opens
  const HARD_LIMIT = 1500;   // never open boxes automatically beyond this many drawn items
  const ERASE = D.mode === 'erase';
  const N = D.nodes.length, C = D.clusters, G = D.groups;
  const WORD = ERASE ? 'structure' : 'group';
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c]));
  const fmt = (x) => x >= 1e9 ? (x / 1e9).toFixed(2) + 'G' : x >= 1e6 ? (x / 1e6).toFixed(2) + 'M' : x >= 1e4 ? (x / 1e3).toFixed(1) + 'k' : String(x);

  // -- the cluster tree ------------------------------------------------------------------------
  const kids = C.map(() => []), members = C.map(() => []);
  for (let c = 1; c < C.length; c++) kids[C[c][1]].push(c);
  for (let i = 0; i < N; i++) members[D.node_cluster[i]].push(i);
  const chain = C.map((_, c) => { const out = []; while (c > 0) { out.push(c); c = C[c][1]; } return out.reverse(); });
  const open = new Uint8Array(C.length); open[0] = 1;
  const rep = (i) => { for (const c of chain[D.node_cluster[i]]) if (!open[c]) return 'c' + c; return 'n' + i; };
  const cost = (c) => kids[c].length + members[c].length - 1;  // drawn items added by opening c
  function drawnCount() {
    let n = 0; const stack = [0];
    while (stack.length) { const c = stack.pop(); n += members[c].length; for (const k of kids[c]) { if (open[k]) stack.push(k); else n += 1; } }
    return n;
  }
  function openWithin(budget) {
    let count = drawnCount(); const queue = kids[0].filter((k) => open[k]).concat(kids[0].filter((k) => !open[k]));
    while (queue.length) {
      const c = queue.shift();
      if (!open[c]) { if (count + cost(c) > budget) continue; open[c] = 1; count += cost(c); }
      for (const k of kids[c]) queue.push(k);
    }
  }

  // -- groups ---------------------------------------------------------------------------------
  const nodeGroups = Array.from({ length: N }, () => []);
  G.forEach((g, pos) => g.nodes.forEach((i) => nodeGroups[i].push(pos)));
  const posOfId = new Map(G.map((g, pos) => [g.id, pos]));
  const childrenOf = G.map(() => []);
  G.forEach((g, pos) => { if (g.parent !== null && posOfId.has(g.parent)) childrenOf[posOfId.get(g.parent)].push(pos); });
  const depth = G.map((g) => { let d = 0, p = g.parent; const seen = new Set(); while (p !== null && posOfId.has(p) && !seen.has(p)) { seen.add(p); d++; p = G[posOfId.get(p)].parent; } return d; });
  const groupColour = (pos) => G[pos].prunable ? PALETTE[G[pos].id % PALETTE.length] : GREY;
  const nodeColour = (i) => D.colour[i] >= 0 ? groupColour(D.colour[i]) : (D.nodes[i][3] ? UNKNOWN : NONE);
  const gone = new Uint8Array(N);  // operators of removed channels (prune) or erased structures (erase)
  G.forEach((g) => { if (g.removed) g.nodes.forEach((i) => { gone[i] = 1; }); });
  function descendants(pos) {
    const out = [], seen = new Set([pos]), stack = [...childrenOf[pos]];
    while (stack.length) { const p = stack.pop(); if (seen.has(p)) continue; seen.add(p); out.push(p); stack.push(...childrenOf[p]); }
    return out;
  }

  // -- the graph --------------------------------------------------------------------------------
  const cy = cytoscape({
    container: $('graph'), textureOnViewport: N > 2000, hideEdgesOnViewport: N > 2000,
    minZoom: 0.02, maxZoom: 4, boxSelectionEnabled: false,
    style: [
      { selector: 'node.op', style: { shape: 'round-rectangle', width: 'data(w)', height: 20, label: 'data(label)', 'font-size': 10, 'text-valign': 'center', 'text-halign': 'center', 'background-color': 'data(bg)', 'border-width': 1, 'border-color': '#777' } },
      { selector: 'node.closed', style: { shape: 'round-rectangle', width: 'data(w)', height: 'data(h)', label: 'data(label)', 'text-wrap': 'wrap', 'font-size': 11, 'text-valign': 'center', 'text-halign': 'center', 'background-color': '#e3eaf6', 'border-width': 2, 'border-color': '#5a74a8' } },
      { selector: 'node.open', style: { shape: 'round-rectangle', label: 'data(label)', 'font-size': 10, color: '#556', 'text-valign': 'top', 'text-halign': 'center', 'background-color': '#f4f6fa', 'background-opacity': 0.6, 'border-width': 1, 'border-style': 'dashed', 'border-color': '#9aa6bd', padding: 8 } },
      { selector: 'edge', style: { width: 1, 'line-color': '#9a9a9a', 'target-arrow-color': '#9a9a9a', 'target-arrow-shape': 'triangle', 'arrow-scale': 0.7, 'curve-style': 'bezier' } },
      { selector: 'node.gone', style: { 'border-style': 'dashed', 'border-color': '#b00020', 'border-width': 2 } },
      { selector: '.faded', style: { opacity: 0.35 } },
      { selector: 'node.hit', style: { 'border-color': '#1f77b4', 'border-width': 4 } },
      { selector: 'node.hl', style: { 'border-color': '#d62728', 'border-width': 4, 'z-index': 10 } },
      { selector: 'node.nested', style: { 'border-color': '#ff7f0e', 'border-width': 4 } },
      { selector: 'node.partial', style: { 'border-color': '#d62728', 'border-width': 4, 'border-style': 'double' } },
    ],
  });
  const state = { selected: -1, hits: null, hitGroups: null };

  function render(fitTo) {
    const els = [];
    const walk = (c) => {
      const parent = c > 0 ? 'c' + c : undefined;
      for (const k of kids[c]) {
        if (open[k]) { els.push({ group: 'nodes', data: { id: 'c' + k, label: C[k][0], parent, cluster: k }, classes: 'open' }); walk(k); }
        else { const label = C[k][0] + '\n' + C[k][2] + ' ops'; els.push({ group: 'nodes', data: { id: 'c' + k, label, w: 16 + 6.6 * Math.max(...label.split('\n').map((l) => l.length)), h: 36, parent, cluster: k }, classes: 'closed' }); }
      }
      for (const i of members[c]) {
        els.push({ group: 'nodes', data: { id: 'n' + i, label: D.nodes[i][1], w: 14 + 6.2 * D.nodes[i][1].length, name: D.nodes[i][0], bg: nodeColour(i), parent, node: i }, classes: gone[i] ? 'op gone' : 'op' });
      }
    };
    walk(0);
    const seen = new Set();
    for (const [u, v] of D.edges) {
      const a = rep(u), b = rep(v);
      if (a === b) continue;
      const key = a + '>' + b;
      if (!seen.has(key)) { seen.add(key); els.push({ group: 'edges', data: { id: 'e' + seen.size, source: a, target: b } }); }
    }
    cy.batch(() => { cy.elements().remove(); cy.add(els); });
    cy.layout({ name: 'dagre', rankDir: 'TB', nodeSep: 14, rankSep: 26, edgeSep: 6, animate: false, fit: false }).run();
    mark();
    const target = fitTo && fitTo.length ? fitTo : cy.elements();
    cy.fit(target, 30);
    if (cy.zoom() > 1.6) { cy.zoom(1.6); cy.center(target); }
    $('status').textContent = cy.nodes('.op').length + ' of ' + N + ' operators drawn, ' + cy.nodes('.closed').length + ' closed boxes';
  }

  function openFor(nodes) {
    // open the boxes hiding ``nodes`` when that keeps the drawing under HARD_LIMIT
    const need = new Set();
    for (const i of nodes) for (const c of chain[D.node_cluster[i]]) if (!open[c]) need.add(c);
    if (!need.size) return false;
    let extra = 0; for (const c of need) extra += cost(c);
    if (drawnCount() + extra > HARD_LIMIT) return false;
    for (const c of need) open[c] = 1;
    return true;
  }

  function mark() {
    cy.batch(() => {
      cy.elements().removeClass('hl partial faded hit nested');
      const focus = state.selected >= 0 || state.hits;
      if (!focus) return;
      const on = new Set();
      const flag = (i, cls) => {
        const r = rep(i); const el = cy.getElementById(r);
        if (r[0] === 'n') { el.addClass(cls); on.add(r); } else { el.addClass(cls === 'hl' ? 'partial' : cls); on.add(r); }
      };
      if (state.hits) state.hits.forEach((i) => flag(i, 'hit'));
      if (state.selected >= 0) {
        for (const p of descendants(state.selected)) G[p].nodes.forEach((i) => flag(i, 'nested'));
        G[state.selected].nodes.forEach((i) => flag(i, 'hl'));
      }
      cy.nodes('.op, .closed').forEach((el) => { if (!on.has(el.id())) el.addClass('faded'); });
      cy.edges().addClass('faded');
    });
  }

  // -- selection and details ----------------------------------------------------------------------
  function selectGroup(pos) {
    state.selected = pos;
    const g = G[pos];
    const opened = openFor(g.nodes);
    if (opened) render(); else mark();
    const focus = cy.nodes('.hl, .partial');
    if (focus.length) { const around = focus.union(focus.neighborhood('node')); cy.fit(around, 40); if (cy.zoom() > 1.4) { cy.zoom(1.4); cy.center(around); } }
    document.querySelectorAll('tr.selected').forEach((tr) => tr.classList.remove('selected'));
    const row = document.querySelector('tr[data-pos="' + pos + '"]');
    if (row) { row.classList.add('selected'); row.scrollIntoView({ block: 'nearest' }); }
    showGroup(pos);
  }

  function groupLink(pos) { return '<a class="gl" data-pos="' + pos + '">' + WORD + ' ' + G[pos].id + '</a>'; }

  function showGroup(pos) {
    const g = G[pos];
    const what = g.prunable ? (ERASE ? 'erasable' : 'prunable') : (ERASE ? 'not erasable' : 'not prunable');
    let h = '<h2><span class="sw" style="display:inline-block;width:12px;height:12px;border:1px solid #888;background:' + groupColour(pos) + '"></span> ' + WORD + ' ' + g.id + ' — ' + what + '</h2>';
    if (g.reason) h += '<div class="why">' + esc(g.reason) + '</div>';
    h += '<div>' + (ERASE ? '' : g.size + ' channels (ZIGs), ') + fmt(g.num_params) + ' parameters, ' + fmt(g.flops) + ' FLOPs</div>';
    if (g.removed) h += '<div class="why"><b>' + (ERASE ? 'erased' : g.removed + ' of ' + g.size + ' channels removed') + '</b></div>';
    if (ERASE) {
      if (g.parent !== null && posOfId.has(g.parent)) h += '<div>inside ' + groupLink(posOfId.get(g.parent)) + '</div>';
      if (childrenOf[pos].length) h += '<div>contains ' + childrenOf[pos].map(groupLink).join(', ') + ' (orange)</div>';
    }
    h += '<b>parameter slices</b><ul>';
    if (g.slices) g.slices.forEach(([p, axis, runs, count]) => { h += '<li><code>' + esc(p) + '</code> axis ' + axis + ': ' + count + ' [' + esc(runs) + ']</li>'; });
    else g.params.forEach(([p, axis]) => { h += '<li><code>' + esc(p) + '</code> axis ' + axis + '</li>'; });
    h += '</ul><b>' + g.nodes.length + ' operators</b><ul>';
    g.nodes.slice(0, 200).forEach((i) => { h += '<li>' + esc(D.nodes[i][1]) + ' <code>' + esc(D.nodes[i][0]) + '</code></li>'; });
    if (g.nodes.length > 200) h += '<li>… ' + (g.nodes.length - 200) + ' more</li>';
    $('details').innerHTML = h + '</ul>';
  }

  function showNode(i) {
    const [name, op, params, unknown] = D.nodes[i];
    let h = '<h2>' + esc(op) + ' <code>' + esc(name) + '</code></h2>';
    if (unknown) h += '<div class="why">unknown operator: every group it touches is unprunable</div>';
    if (params.length) h += '<b>parameters</b><ul>' + params.map((p) => '<li><code>' + esc(D.params[p]) + '</code></li>').join('') + '</ul>';
    h += nodeGroups[i].length ? '<div>in ' + nodeGroups[i].map(groupLink).join(', ') + '</div>' : '<div>in no ' + WORD + '</div>';
    $('details').innerHTML = h;
  }

  $('details').addEventListener('click', (ev) => { const a = ev.target.closest('a.gl'); if (a) selectGroup(+a.dataset.pos); });
  cy.on('tap', 'node', (ev) => {
    const el = ev.target;
    if (el.hasClass('closed')) { open[el.data('cluster')] = 1; render(); return; }
    if (el.hasClass('open')) { open[el.data('cluster')] = 0; render(); return; }
    showNode(el.data('node'));
  });

  // -- table ------------------------------------------------------------------------------------
  const cols = [
    { key: 'id', label: ERASE ? 'structure' : 'group', cls: 'id' },
    ...(ERASE ? [{ key: 'parent', label: 'inside' }] : [{ key: 'size', label: 'size' }]),
    { key: 'num_params', label: 'params' },
    { key: 'flops', label: 'FLOPs' },
    { key: 'prunable', label: ERASE ? 'erasable' : 'prunable' },
    ...(D.result ? [{ key: 'removed', label: ERASE ? 'erased' : 'removed', cls: 'removed' }] : []),
    { key: 'reason', label: 'reason', cls: 'reason' },
  ];
  // erase mode starts in tree order: every structure right after the one it sits in
  const treeOrder = [];
  (function () { const roots = G.map((g, p) => p).filter((p) => depth[p] === 0); const visit = (p) => { treeOrder.push(p); childrenOf[p].forEach(visit); }; roots.forEach(visit); const placed = new Set(treeOrder); G.forEach((g, p) => { if (!placed.has(p)) treeOrder.push(p); }); })();
  const sort = { key: null, dir: 1 };
  function drawHead() {
    $('groups').tHead.innerHTML = '<tr>' + cols.map((c) => '<th data-key="' + c.key + '" class="' + (c.cls || '') + (sort.key === c.key ? (sort.dir > 0 ? ' sorted-asc' : ' sorted-desc') : '') + '">' + c.label + '</th>').join('') + '</tr>';
  }
  function cell(g, pos, c) {
    const v = g[c.key];
    if (c.key === 'id') return '<span class="sw" style="background:' + groupColour(pos) + '"></span>' + (ERASE ? '&nbsp;'.repeat(2 * depth[pos]) : '') + v;
    if (c.key === 'prunable') return v ? 'yes' : 'no';
    if (c.key === 'removed') return ERASE ? (v ? 'yes' : '') : (v ? v : '');
    if (c.key === 'reason') return v ? esc(v) : '';
    if (c.key === 'parent') return v === null ? '' : v;
    return fmt(v);
  }
  function drawRows() {
    let rows = ERASE && sort.key === null ? treeOrder.slice() : G.map((g, p) => p);
    if (state.hitGroups) rows = rows.filter((p) => state.hitGroups.has(p));
    if (sort.key !== null) {
      const k = sort.key;
      const val = (p) => { const v = G[p][k]; return v === null ? -1 : typeof v === 'boolean' ? +v : v; };
      rows.sort((a, b) => { const x = val(a), y = val(b); return (x < y ? -1 : x > y ? 1 : G[a].id - G[b].id) * sort.dir; });
    }
    const body = document.createElement('tbody');
    const html = [];
    for (const p of rows) {
      const g = G[p];
      html.push('<tr class="group-row' + (p === state.selected ? ' selected' : '') + (g.removed ? ' gone' : '') + '" data-pos="' + p + '" data-id="' + g.id + '">' +
        cols.map((c) => '<td class="' + (c.cls || '') + '"' + (c.key === 'reason' && g.reason ? ' title="' + esc(g.reason) + '"' : '') + '>' + cell(g, p, c) + '</td>').join('') + '</tr>');
    }
    body.innerHTML = html.join('');
    $('groups').replaceChild(body, $('groups').tBodies[0]);
  }
  $('groups').addEventListener('click', (ev) => {
    const th = ev.target.closest('th');
    if (th) { const k = th.dataset.key; sort.dir = sort.key === k ? -sort.dir : (k === 'id' || k === 'reason' ? 1 : -1); sort.key = k; drawHead(); drawRows(); return; }
    const tr = ev.target.closest('tr.group-row');
    if (tr) selectGroup(+tr.dataset.pos);
  });

  // -- search -----------------------------------------------------------------------------------
  let timer = null;
  function search(q) {
    q = q.trim().toLowerCase();
    if (!q) { state.hits = null; state.hitGroups = null; drawRows(); mark(); return; }
    const pmatch = D.params.map((p) => p.toLowerCase().includes(q));
    const hits = [];
    for (let i = 0; i < N; i++) {
      const [name, op, params] = D.nodes[i];
      if (op.toLowerCase() === q || name.toLowerCase().includes(q) || params.some((p) => pmatch[p])) hits.push(i);
    }
    const hitGroups = new Set();
    G.forEach((g, p) => { if (g.params.some(([name]) => name.toLowerCase().includes(q))) hitGroups.add(p); });
    hits.forEach((i) => nodeGroups[i].forEach((p) => hitGroups.add(p)));
    state.hits = hits; state.hitGroups = hitGroups;
    drawRows();
    if (hits.length <= 400 && openFor(hits)) render(); else mark();
    $('status').textContent = hits.length + ' operators and ' + hitGroups.size + ' ' + WORD + 's match';
  }
  $('search').addEventListener('input', (ev) => { clearTimeout(timer); timer = setTimeout(() => search(ev.target.value), 150); });

  // -- toolbar, header --------------------------------------------------------------------------
  $('expand-all').disabled = N > 3000;
  if (N > 3000) $('expand-all').title = 'too many operators to draw at once: open boxes one by one';
  $('expand-all').addEventListener('click', () => { open.fill(1); render(); });
  $('collapse-all').addEventListener('click', () => { open.fill(0); open[0] = 1; openWithin(START_BUDGET); render(); });
  $('fit').addEventListener('click', () => cy.fit(cy.elements(), 30));
  $('clear').addEventListener('click', () => {
    state.selected = -1; $('search').value = ''; state.hits = null; state.hitGroups = null;
    document.querySelectorAll('tr.selected').forEach((tr) => tr.classList.remove('selected'));
    drawRows(); mark();
  });

  const S = D.summary;
  $('title').textContent = 'zigraph ' + D.mode + ' view: ' + S.model.name + (S.model.source ? ' (' + S.model.source + ')' : '');
  $('summary').textContent = S.num_nodes + ' operators, ' + fmt(S.params_total) + ' parameters (' + fmt(S.params_prunable) + ' ' + (ERASE ? 'erasable' : 'prunable') + '), ' +
    fmt(S.flops_total) + ' FLOPs; ' + S.num_groups + ' ' + WORD + 's, ' + S.num_prunable_groups + (ERASE ? ' erasable' : ' prunable (' + S.num_prunable_zigs + ' of ' + S.num_zigs + ' ZIGs)') +
    (Object.keys(S.unknown_ops).length ? '; unknown ops: ' + Object.entries(S.unknown_ops).map(([k, v]) => k + '×' + v).join(', ') : '');
  if (D.result) {
    const R = D.result;
    const pct = (a, b) => b ? ' (−' + (100 * (1 - a / b)).toFixed(1) + '%)' : '';
    let h = ERASE
      ? 'erased ' + R.structures_erased.length + ' structures (' + R.nodes_removed + ' operators), parameters ' + fmt(R.params_before) + ' → ' + fmt(R.params_after) + pct(R.params_after, R.params_before) +
        (R.flops_after >= 0 ? ', FLOPs ' + fmt(R.flops_before) + ' → ' + fmt(R.flops_after) + pct(R.flops_after, R.flops_before) : '')
      : 'pruned ' + R.zigs_removed + ' ZIGs, parameters ' + fmt(R.params_before) + ' → ' + fmt(R.params_after) + pct(R.params_after, R.params_before);
    if (D.removed) h += '; removed ' + D.removed.indices + ' indices in ' + D.removed.slices + ' slices of ' + D.removed.params + ' parameters';
    const V = R.verification;
    h += V ? '. Verification <span id="verdict" class="' + (V.passed ? 'pass">PASSED' : 'fail">FAILED') + '</span>: max abs error ' + V.max_abs.toExponential(2) + ', max relative error ' + V.max_rel.toExponential(2) + ' (tolerance ' + V.rtol + ', ' + V.samples + ' samples)'
      : '. <span id="verdict">not verified</span> (--no-verify)';
    h += R.output ? '; written to <code>' + esc(R.output) + '</code>' : '; nothing written';
    if (R.note) h += ' — ' + esc(R.note);
    $('result').innerHTML = h;
  }
  $('legend').innerHTML = (ERASE ? 'colour: innermost structure' : 'colour: node group') +
    '<span class="sw" style="background:' + GREY + '"></span>' + (ERASE ? 'not erasable' : 'not prunable') +
    '<span class="sw" style="background:' + UNKNOWN + '"></span>unknown op' +
    '<span class="sw" style="background:#e3eaf6;border-color:#5a74a8"></span>closed box (click to open)' +
    (D.result ? '<span class="sw" style="border:2px dashed #b00020"></span>' + (ERASE ? 'erased' : 'channels removed') : '');

  drawHead(); drawRows();
  openWithin(START_BUDGET);
  render();
  window.zigraphView = {
    cy, selectGroup, search,
    selectGroupById: (id) => selectGroup(posOfId.get(id)),
    highlighted: () => cy.nodes('node.op.hl').map((n) => n.data('name')).sort(),
    drawnCount: () => cy.nodes('.op, .closed').length,
  };
  document.body.dataset.ready = '1';
})();
