// The causalrm status page: polls status.json every second and updates the
// DOM. Plain JavaScript, no framework; the charts are inline SVG. Every
// value from the server goes in as text (textContent), never as markup.
'use strict';

(function () {
  const POLL_MS = 1000;
  const GEN_ROWS = 12; // generations listed (the timeline shows all it got)
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  let polls = 0;
  let lastOK = 0;

  // el makes an HTML element; children are nodes or text.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') e.className = v;
      else if (k.startsWith('data-')) e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  function text(id, v) {
    const e = $(id);
    if (e.textContent !== String(v)) e.textContent = String(v);
  }

  const num = (x) => (x === null || x === undefined || !isFinite(x) ? '–' : Math.round(x).toLocaleString('en-US'));
  const rate = (x) => (!x ? '0' : x >= 100 ? num(x) : x.toFixed(x >= 10 ? 1 : 2));

  function bytes(n) {
    if (!n) return '0 B';
    const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n >= 10 ? 0 : 1)) + ' ' + u[i];
  }

  function clock(ms) {
    if (!ms) return '–';
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // day is the time of day when ms is on the day of now, else the date and
  // time.
  function day(ms, now) {
    if (!ms) return '–';
    return new Date(ms).toDateString() === new Date(now).toDateString() ? timeLabel(ms) : clock(ms);
  }

  function ago(ms, now) {
    if (!ms) return '–';
    let s = Math.max(0, Math.round((now - ms) / 1000));
    if (s < 60) return s + ' s ago';
    if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s ago';
    return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min ago';
  }

  function replaceRows(tableID, rows) {
    const tbody = $(tableID).tBodies[0];
    tbody.replaceChildren(...rows);
  }

  // Charts ---------------------------------------------------------------

  const W = 400, H = 120, PAD = { l: 46, r: 8, t: 8, b: 20 };

  function ticks(lo, hi, n) {
    if (hi <= lo) return [lo];
    const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    const k = [1, 2, 5, 10].find((m) => (hi - lo) / (step * m) <= n) * step;
    const out = [];
    for (let v = Math.ceil(lo / k) * k; v <= hi + 1e-9; v += k) out.push(v);
    return out;
  }

  function shortNum(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e4) return (v / 1e3).toFixed(0) + 'k';
    if (a >= 100 || v === Math.round(v)) return String(Math.round(v));
    return v.toFixed(2);
  }

  function timeLabel(ms) {
    const d = new Date(ms);
    const p = (x) => String(x).padStart(2, '0');
    return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  }

  // axes draws a frame with y ticks and the first and last x (time) labels;
  // it returns the scales.
  function axes(root, x0, x1, y0, y1) {
    const sx = (x) => PAD.l + ((x - x0) / (x1 - x0 || 1)) * (W - PAD.l - PAD.r);
    const sy = (y) => H - PAD.b - ((y - y0) / (y1 - y0 || 1)) * (H - PAD.t - PAD.b);
    for (const t of ticks(y0, y1, 4)) {
      root.append(svg('line', { class: 'axis', x1: PAD.l, x2: W - PAD.r, y1: sy(t), y2: sy(t) }));
      root.append(svg('text', { x: PAD.l - 4, y: sy(t) + 3, 'text-anchor': 'end' }, shortNum(t)));
    }
    root.append(svg('text', { x: PAD.l, y: H - 5 }, timeLabel(x0)));
    root.append(svg('text', { x: W - PAD.r, y: H - 5, 'text-anchor': 'end' }, timeLabel(x1)));
    return { sx, sy };
  }

  function empty(root, msg) {
    root.append(svg('text', { class: 'empty', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, msg));
  }

  // lineChart draws points [{x: ms, y}] into the container div.
  function lineChart(id, pts, emptyMsg) {
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img' });
    if (pts.length < 2) {
      empty(root, emptyMsg);
    } else {
      const x0 = pts[0].x, x1 = pts[pts.length - 1].x;
      const ys = pts.map((p) => p.y);
      const y1 = Math.max(...ys) || 1;
      const { sx, sy } = axes(root, x0, x1, 0, y1);
      root.append(svg('polyline', { class: 'line', points: pts.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' ') }));
    }
    $(id).replaceChildren(root);
  }

  function drawCharts(v) {
    const s = v.samples || [];
    lineChart('chart-step', s.map((p) => ({ x: p.time, y: p.global_step })), 'waiting for progress reports');
    const r = [];
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i].time - s[i - 1].time) / 1000;
      if (dt > 0 && s[i].global_step >= s[i - 1].global_step) r.push({ x: s[i].time, y: (s[i].global_step - s[i - 1].global_step) / dt });
    }
    lineChart('chart-rate', r, 'waiting for two progress reports');
    lineChart('chart-rows', s.map((p) => ({ x: p.time, y: p.rows_per_sec })), 'waiting for progress reports');
  }

  // The generations timeline: the member count over time, one dot per
  // generation coloured by its cause.
  function drawGenerations(v) {
    const gens = v.generations || [];
    const w = 600, h = 96;
    const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, role: 'img' });
    if (gens.length === 0) {
      root.append(svg('text', { class: 'empty', x: w / 2, y: h / 2, 'text-anchor': 'middle' }, 'no generation yet'));
    } else {
      const t0 = gens[0].time, t1 = Math.max(v.time, gens[gens.length - 1].time + 1);
      const maxM = Math.max(...gens.map((g) => g.members.length), 1);
      const sx = (t) => PAD.l + ((t - t0) / (t1 - t0 || 1)) * (w - PAD.l - PAD.r);
      const sy = (m) => h - PAD.b - (m / maxM) * (h - PAD.t - PAD.b - 10);
      for (const m of ticks(0, maxM, 3)) {
        root.append(svg('line', { class: 'axis', x1: PAD.l, x2: w - PAD.r, y1: sy(m), y2: sy(m) }));
        root.append(svg('text', { x: PAD.l - 4, y: sy(m) + 3, 'text-anchor': 'end' }, shortNum(m)));
      }
      let d = '';
      gens.forEach((g, i) => {
        const x = sx(g.time), y = sy(g.members.length);
        d += (i === 0 ? `M${x.toFixed(1)},${y.toFixed(1)}` : `H${x.toFixed(1)}V${y.toFixed(1)}`);
      });
      d += `H${sx(t1).toFixed(1)}`;
      root.append(svg('path', { class: 'members-line', d }));
      let lastX = -1e9;
      for (const g of gens) {
        const x = sx(g.time), y = sy(g.members.length);
        const c = svg('circle', { class: 'dot ' + (g.label || 'other'), cx: x, cy: y, r: 4 });
        c.append(svg('title', {}, `generation ${g.number}: ${g.cause}, ${g.members.length} members`));
        root.append(c);
        // A number too close to the previous one goes right of its dot.
        const near = x - lastX < 14;
        root.append(svg('text', near ? { x: x + 6, y: y + 12 } : { x, y: y - 7, 'text-anchor': 'middle' }, g.number));
        if (!near) lastX = x;
      }
      root.append(svg('text', { x: PAD.l, y: h - 5 }, timeLabel(t0)));
      root.append(svg('text', { x: w - PAD.r, y: h - 5, 'text-anchor': 'end' }, timeLabel(t1)));
      root.append(svg('text', { x: 4, y: PAD.t + 4 }, 'members'));
    }
    $('chart-generations').replaceChildren(root);
  }

  // lossChart draws a stage's training and validation loss per epoch (the
  // epochs a worker reported complete); data-loss-epochs counts them.
  function lossChart(name, eps) {
    const w = 300, h = 80, pl = 34, pr = 4, pb = 14, pt = 12;
    const pts = eps.filter((e) => e.train != null && e.val != null);
    const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, role: 'img', class: 'loss', 'data-loss-epochs': pts.length });
    if (pts.length === 0) {
      root.append(svg('text', { class: 'empty', x: w / 2, y: h / 2, 'text-anchor': 'middle' }, 'no epoch complete yet'));
      return root;
    }
    const ys = pts.flatMap((e) => [e.train, e.val]);
    let y0 = Math.min(...ys), y1 = Math.max(...ys);
    if (y1 - y0 < 1e-12) { y0 -= 0.5; y1 += 0.5; }
    const e0 = pts[0].epoch, e1 = pts[pts.length - 1].epoch;
    const sx = (e) => pl + (e1 > e0 ? (e - e0) / (e1 - e0) : 0.5) * (w - pl - pr);
    const sy = (y) => h - pb - ((y - y0) / (y1 - y0)) * (h - pb - pt);
    // At least two labelled levels: the ends of the range when the round
    // ticks inside it are fewer.
    let ts = ticks(y0, y1, 4);
    if (ts.length < 2) ts = [y0, y1];
    for (const t of ts) {
      root.append(svg('line', { class: 'axis', x1: pl, x2: w - pr, y1: sy(t), y2: sy(t) }));
      root.append(svg('text', { x: pl - 4, y: sy(t) + 3, 'text-anchor': 'end' }, String(Number(t.toPrecision(3)))));
    }
    for (const k of ['train', 'val']) {
      const line = svg('polyline', { class: 'loss-' + k, points: pts.map((e) => `${sx(e.epoch).toFixed(1)},${sy(e[k]).toFixed(1)}`).join(' ') });
      line.append(svg('title', {}, `${name}: ${k === 'train' ? 'training' : 'validation'} loss per epoch`));
      root.append(line);
    }
    root.append(svg('text', { x: pl, y: h - 3 }, `epoch ${e0}`));
    root.append(svg('text', { x: w - pr, y: h - 3, 'text-anchor': 'end' }, `epoch ${e1}`));
    root.append(svg('text', { class: 'key-train', x: pl, y: 9 }, 'train'));
    root.append(svg('text', { class: 'key-val', x: pl + 34, y: 9 }, 'val'));
    const last = pts[pts.length - 1];
    root.append(svg('text', { x: w - pr, y: 9, 'text-anchor': 'end' }, `epoch ${last.epoch}: ${last.train.toPrecision(4)} / ${last.val.toPrecision(4)}`));
    return root;
  }

  // One small bar chart per stage: committed steps per epoch; under it the
  // stage's losses.
  function drawStages(v) {
    const boxes = [];
    for (const st of v.stages || []) {
      const w = 300, h = 70, pl = 34, pb = 14, pt = 6;
      const root = svg('svg', { viewBox: `0 0 ${w} ${h}`, role: 'img' });
      const eps = st.epochs || [];
      const maxS = Math.max(...eps.map((e) => e.steps), 1);
      const bw = (w - pl - 4) / Math.max(eps.length, 1);
      const sy = (s) => h - pb - (s / maxS) * (h - pb - pt);
      for (const t of ticks(0, maxS, 3)) {
        root.append(svg('line', { class: 'axis', x1: pl, x2: w - 4, y1: sy(t), y2: sy(t) }));
        root.append(svg('text', { x: pl - 4, y: sy(t) + 3, 'text-anchor': 'end' }, shortNum(t)));
      }
      eps.forEach((e, i) => {
        const x = pl + i * bw + bw * 0.15;
        const r = svg('rect', { class: 'bar', x: x.toFixed(1), y: sy(e.steps).toFixed(1), width: (bw * 0.7).toFixed(1), height: (h - pb - sy(e.steps)).toFixed(1) });
        r.append(svg('title', {}, `${st.name} epoch ${e.epoch}: ${e.steps} steps`));
        root.append(r);
        root.append(svg('text', { x: (x + bw * 0.35).toFixed(1), y: h - 4, 'text-anchor': 'middle' }, e.epoch));
      });
      const cur = v.progress && v.progress.stage === st.name && v.status.phase === 'running';
      boxes.push(el('div', { class: 'stage' + (cur ? ' current' : ''), 'data-stage': st.name },
        el('div', {}, el('span', { class: 'title' }, st.name), ' ',
          el('span', { class: 'muted' }, `${num(st.steps)} steps, ${eps.length} epoch${eps.length === 1 ? '' : 's'}`)),
        root, lossChart(st.name, eps)));
    }
    if (boxes.length === 0) boxes.push(el('p', { class: 'muted' }, 'no committed steps yet'));
    $('stages').replaceChildren(...boxes);
  }

  // Tables ----------------------------------------------------------------

  function badge(s) {
    return el('span', { class: 'badge ' + s }, s || 'none');
  }

  function drawMembers(v) {
    replaceRows('members', (v.members || []).map((m) => el('tr', { class: m.status, 'data-worker': m.id, 'data-status': m.status },
      el('td', {}, m.id),
      el('td', {}, badge(m.status)),
      el('td', { class: 'num' }, m.rank >= 0 ? m.rank : '–'),
      el('td', { class: 'num' }, m.rank >= 0 ? m.shards : '–'),
      el('td', {}, m.addr),
      el('td', { class: 'num', 'data-last-step': m.last_global_step }, m.last_global_step ? num(m.last_global_step) : 'none'),
      el('td', { class: 'num' }, m.rows_per_sec_time ? num(m.rows_per_sec) : '–'),
      el('td', { title: clock(m.updated) }, ago(m.updated, v.time)))));
  }

  function drawGenerationTable(v) {
    const gens = (v.generations || []).slice(-GEN_ROWS).reverse();
    replaceRows('generations', gens.map((g) => el('tr', { 'data-generation': g.number },
      el('td', { class: 'num' }, g.number),
      el('td', {}, g.cause),
      el('td', {}, `${g.members.length}: ${g.members.join(', ')}`),
      el('td', { title: clock(g.time) + ', ' + ago(g.time, v.time) }, day(g.time, v.time)))));
    const total = v.generations_total || 0;
    text('generations-total', total > gens.length ? `(newest ${gens.length} of ${total} listed)` : `(${total})`);
  }

  function drawCheckpoints(v) {
    const cps = (v.checkpoints || []).slice().reverse();
    replaceRows('checkpoints', cps.length ? cps.map((c) => el('tr', { 'data-checkpoint': c.id },
      el('td', { class: 'num' }, c.id),
      el('td', { class: 'num' }, num(c.global_step)),
      el('td', {}, `${c.stage} / ${c.epoch} / ${c.step}`),
      el('td', { class: 'num' }, bytes(c.size)),
      el('td', {}, c.location),
      el('td', { title: clock(c.time) + ', ' + ago(c.time, v.time) }, day(c.time, v.time)))) : [el('tr', {}, el('td', { colSpan: 6, class: 'muted' }, 'none yet'))]);
    const rw = v.rewinds || [];
    $('rewinds-box').hidden = rw.length === 0;
    replaceRows('rewinds', rw.map((r) => el('tr', {},
      el('td', { class: 'num' }, num(r.from)), el('td', { class: 'num' }, num(r.to)),
      el('td', { class: 'num' }, '#' + r.checkpoint_id), el('td', {}, clock(r.time)))));
  }

  // Header and cards --------------------------------------------------------

  function drawSummary(v) {
    const phase = v.status.phase || (v.job ? 'pending' : 'none');
    document.body.dataset.phase = phase;
    text('job-id', v.job ? 'job ' + v.job.id : 'no job submitted');
    const ph = $('phase');
    ph.className = 'badge ' + phase;
    ph.textContent = phase;
    text('node', `coordinator ${v.node}` + (v.is_leader ? ' (leader)' : v.leader ? `, leader ${v.leader} ${v.leader_addr}` : ', no leader'));
    const msg = $('message');
    const m = v.status.message || (v.status.reward_sha256 ? 'reward.safetensors sha256 ' + v.status.reward_sha256 : '');
    msg.hidden = !m;
    msg.className = 'message ' + phase;
    msg.textContent = m;

    const p = v.progress;
    text('global-step', p.global_step);
    text('position', p.stage ? `${p.stage} · ep ${p.epoch} · step ${p.step}` : 'no progress yet');
    $('position').title = p.stage ? `stage ${p.stage}, epoch ${p.epoch}, step ${p.step}` : '';
    text('step-rate', rate(v.step_rate));
    text('rows-per-sec', p.time ? num(p.rows_per_sec) : '–');
    text('reported', p.time ? `by ${p.worker_id}, ${ago(p.time, v.time)}` : '');
    const gens = v.generations || [];
    const g = gens[gens.length - 1];
    text('generation', g ? g.number : '–');
    text('cause', g ? `${g.cause}, ${g.members.length} members` : '');
    const c = v.counts || {};
    text('active-count', c.active || 0);
    const others = ['pending', 'leaving', 'gone'].filter((s) => c[s]).map((s) => `${c[s]} ${s}`);
    text('counts', others.length ? others.join(', ') : 'none pending or leaving');
    const cps = v.checkpoints || [];
    const last = cps[cps.length - 1];
    text('checkpoint', last ? `#${last.id} @ ${num(last.global_step)}` : 'none');
    text('checkpoint-age', last ? `${bytes(last.size)}, ${ago(last.time, v.time)}` : '');
  }

  function render(v) {
    drawSummary(v);
    drawCharts(v);
    drawMembers(v);
    drawGenerations(v);
    drawGenerationTable(v);
    drawStages(v);
    drawCheckpoints(v);
  }

  function setConn(ok, err) {
    const c = $('conn');
    if (ok) {
      lastOK = Date.now();
      c.className = 'conn';
      c.textContent = 'live · updated ' + timeLabel(lastOK);
    } else {
      c.className = 'conn down';
      c.textContent = 'disconnected (' + err + ')' + (lastOK ? ', last update ' + timeLabel(lastOK) : '');
    }
  }

  async function poll() {
    try {
      const r = await fetch('status.json', { cache: 'no-store' });
      if (!r.ok) throw new Error(r.status + ' ' + r.statusText);
      render(await r.json());
      polls++;
      document.body.dataset.polls = String(polls);
      text('polls', `${polls} updates.`);
      setConn(true);
    } catch (e) {
      setConn(false, e && e.message ? e.message : e);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  poll();
})();
