// The operator console's page: sign-in, then three views (#/ sagas, #/saga/ID, #/dead-letters), each
// asked for again every few seconds while the page is visible (live, without reloading). The admin's
// token stays in this tab's sessionStorage and goes only to this origin, as `Authorization: Bearer`.
// Everything from the data is put in as text, never as markup. Timelines and diagrams are SVG drawn here.
'use strict';

(() => {
  const STORE = 'knative-saga-console';
  const SVG = 'http://www.w3.org/2000/svg';
  const STATES = ['RUNNING', 'COMPENSATING', 'PARKED', 'COMPLETED', 'COMPENSATED'];
  const AGES = [
    ['', 'any age'], ['newerThan=300', 'started in the last 5 min'], ['newerThan=3600', 'in the last hour'],
    ['newerThan=86400', 'in the last day'], ['olderThan=60', 'older than 1 min'], ['olderThan=600', 'older than 10 min'],
    ['olderThan=3600', 'older than 1 hour'], ['olderThan=86400', 'older than 1 day'],
  ];
  const DEAD_LETTER_REFRESH = 5; // seconds at least: each look reads Kafka
  let session = readSession();
  let view = null; // {refresh(), seconds}
  let timer = null;
  let drawn = 0; // tells SVG ids apart

  // --- DOM ---
  function h(tag, attrs, ...children) {
    return fill(document.createElement(tag), attrs, children);
  }

  function s(tag, attrs, ...children) {
    return fill(document.createElementNS(SVG, tag), attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const $ = (id) => document.getElementById(id);
  // replaceChildren and append, leaving out what is not there (the DOM's own would write "null").
  const put = (node, ...children) => fill(node, {}, [node.replaceChildren(), children]);
  const add = (node, ...children) => fill(node, {}, children);

  // --- session ---
  function readSession() {
    try {
      return JSON.parse(sessionStorage.getItem(STORE)) || null;
    } catch (error) {
      return null;
    }
  }

  function keep(tokens, username) {
    session = {access: tokens.access_token, refresh: tokens.refresh_token, username};
    sessionStorage.setItem(STORE, JSON.stringify(session));
  }

  function signOut(message) {
    session = null;
    sessionStorage.removeItem(STORE);
    stop();
    $('view').replaceChildren();
    $('nav').hidden = true;
    $('session').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('login-form').elements.username.focus();
  }

  class Problem extends Error {
    constructor(status, body) {
      super((body && (body.detail || body.title)) || `the console answered ${status}`);
      this.status = status;
      this.body = body;
    }
  }

  async function post(path, body) {
    const response = await fetch(path, {
      method: 'POST', headers: {'Content-Type': 'application/json', Accept: 'application/json'},
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) throw new Problem(response.status, answer);
    return answer;
  }

  async function refreshTokens() {
    try {
      keep(await post('auth/refresh', {refresh_token: session.refresh}), session.username);
      return true;
    } catch (error) {
      return false;
    }
  }

  async function api(path, options = {}, again = true) {
    if (!session) throw new Problem(401, {detail: 'signed out'});
    const response = await fetch(path, {
      ...options,
      headers: {...(options.headers || {}), Authorization: `Bearer ${session.access}`, Accept: 'application/json'},
    });
    if (response.status === 401 && again && session.refresh && await refreshTokens()) {
      return api(path, options, false);
    }
    const body = await response.json().catch(() => null);
    if (response.status === 401) {
      signOut('Your session has ended: sign in again.');
      throw new Problem(401, body);
    }
    if (!response.ok) throw new Problem(response.status, body);
    return body;
  }

  const postJson = (path, body) => api(path, {
    method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body || {}),
  });

  // --- live refresh ---
  let running = false;
  let again = false;

  function start(next) {
    stop();
    view = next;
    tick();
  }

  function stop() {
    clearTimeout(timer);
    timer = null;
    view = null;
  }

  // One look at a time: a look asked for while one runs (a button's) follows it at once.
  async function tick() {
    clearTimeout(timer);
    if (running) {
      again = true;
      return;
    }
    const shown = view;
    if (!shown) return;
    running = true;
    try {
      if (!document.hidden) await look(shown);
    } finally {
      running = false;
    }
    if (again) {
      again = false;
      tick();
    } else if (view) {
      timer = setTimeout(tick, 1000 * Math.max(view.seconds(), 0.5));
    }
  }

  async function look(shown) {
    try {
      await shown.refresh();
      if (shown === view) live(true);
    } catch (error) {
      if (shown !== view) return;
      if (error instanceof Problem && error.status === 403) return denied(error);
      live(false, error.message);
      if (shown.failed) shown.failed(error);
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && view) tick();
  });

  function live(ok, why) {
    const badge = $('live');
    badge.classList.toggle('stale', !ok);
    badge.textContent = ok ? `live · ${clock(new Date())}` : 'not answering · trying again';
    badge.title = ok ? 'The page asks again every few seconds while it is visible' : why || '';
  }

  function denied(error) {
    stop();
    $('nav').hidden = true;
    $('view').replaceChildren(h('div', {class: 'notice bad', id: 'denied', role: 'alert'},
      `Signed in as ${session ? session.username : '?'}, who may not use the console: ${error.message}.`));
  }

  // --- formatting ---
  const clock = (date) => date.toLocaleTimeString('en-GB', {hour12: false});

  function duration(ms) {
    if (ms === null || ms === undefined) return '';
    const trim = (value, digits) => value.toFixed(digits).replace(/\.?0+$/, '');
    if (ms < 1) return `${trim(ms, 1)} ms`;
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${trim(ms / 1000, ms < 10000 ? 2 : 1)} s`;
    if (ms < 3600000) return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
    return `${trim(ms / 3600000, 1)} h`;
  }

  function ago(iso, now) {
    const ms = new Date(now) - new Date(iso);
    return ms < 1000 ? 'now' : `${duration(ms < 60000 ? Math.round(ms / 1000) * 1000 : ms)} ago`;
  }

  const stateBadge = (state) => h('span', {class: `state ${state}`}, state);
  const sagaLink = (id, type) => h('a', {href: `#/saga/${id}`, class: 'mono', 'data-link': 'saga', title: type || ''}, id);
  const participant = (name) => (name || '').replace(/^\/functions\//, '');
  const same = (view, key, data) => {
    const text = JSON.stringify(data);
    if (view[key] === text) return true;
    view[key] = text;
    return false;
  };

  function notice(node, ok, text) {
    node.replaceChildren(h('div', {class: `notice ${ok ? 'good' : 'bad'}`, role: 'status'}, text));
  }

  // --- #/ : sagas ---
  function sagasView(params) {
    const query = new URLSearchParams(params);
    const filters = h('form', {class: 'filters', id: 'filters', onsubmit: (e) => e.preventDefault()});
    const type = h('select', {name: 'type', 'aria-label': 'saga type'}, h('option', {value: ''}, 'every type'));
    const state = h('select', {name: 'state', 'aria-label': 'state'}, h('option', {value: ''}, 'every state'),
      STATES.map((name) => h('option', {value: name}, name)));
    const age = h('select', {name: 'age', 'aria-label': 'age'},
      AGES.map(([value, label]) => h('option', {value}, label)));
    const customer = h('input', {name: 'customer', placeholder: 'customer id', size: 14, 'aria-label': 'customer',
      maxlength: 64, value: query.get('customer') || ''});
    state.value = query.get('state') || '';
    age.value = (AGES.find(([value]) => {
      const [name, seconds] = value.split('=');
      return value && query.get(name) === seconds;
    }) || [''])[0];
    filters.append(
      h('label', {}, 'Type', type), h('label', {}, 'State', state), h('label', {}, 'Age', age),
      h('label', {}, 'Customer', customer),
      h('button', {type: 'button', class: 'secondary', onclick: () => go({})}, 'Clear'),
    );
    const apply = () => {
      const next = {};
      if (type.value) next.type = type.value;
      if (state.value) next.state = state.value;
      if (customer.value.trim()) next.customer = customer.value.trim();
      if (age.value) {
        const [name, value] = age.value.split('=');
        next[name] = value;
      }
      go(next);
    };
    for (const field of [type, state, age]) field.addEventListener('change', apply);
    customer.addEventListener('change', apply);
    const counts = h('div', {class: 'counts', id: 'counts'});
    const attention = h('section', {class: 'panel attention', id: 'attention'});
    const list = h('section', {class: 'panel', id: 'sagas'});
    const message = h('div', {id: 'message'});
    $('view').replaceChildren(message, h('section', {class: 'panel'}, filters, counts), attention, list);
    const self = {
      seconds: () => self.every || 2,
      async refresh() {
        const found = await api(`api/sagas?${query}`);
        self.every = found.refreshSeconds;
        if (type.options.length === 1) {
          type.append(...found.types.map((name) => h('option', {value: name}, name)));
          type.value = query.get('type') || '';
        }
        if (same(self, 'shown', {...found, now: null})) return ages(found.now);
        drawCounts(counts, found, query);
        drawAttention(attention, found, message);
        list.replaceChildren(h('h2', {}, 'Sagas', h('span', {class: 'summary'},
          ` ${found.sagas.length} shown, those that need a person first`)), sagaTable(found.sagas, found.now, null));
      },
    };
    return self;
  }

  // Nothing else changed: only the ages move on (buttons stay where they are, under the pointer).
  function ages(now) {
    for (const cell of document.querySelectorAll('[data-ago]')) cell.textContent = ago(cell.dataset.ago, now);
  }

  function go(params) {
    const query = new URLSearchParams(params).toString();
    location.hash = query ? `#/?${query}` : '#/';
  }

  function drawCounts(node, found, query) {
    const chip = (label, value, count) => h('button', {
      type: 'button', class: `count${(query.get('state') || '') === value ? ' on' : ''}`, 'data-state': value || 'ALL',
      onclick: () => {
        const next = Object.fromEntries(query);
        if (value) next.state = value; else delete next.state;
        go(next);
      },
    }, label, h('b', {}, count));
    node.replaceChildren(chip('all', '', found.total),
      ...STATES.map((state) => chip(state.toLowerCase(), state, found.counts[state] || 0)));
  }

  function drawAttention(node, found, message) {
    const needs = found.needsAPerson;
    const parts = [`${needs.parked} parked`, `${needs.stuck} stuck past their deadline`,
      `${needs.timedOut} timed out in the last day`];
    node.replaceChildren(h('h2', {}, 'Needs a person', h('span', {class: 'summary'}, parts.join(' · '))),
      needs.sagas.length ? sagaTable(needs.sagas, found.now, message)
        : h('p', {class: 'empty'}, 'Nothing waits for a person.'));
  }

  function sagaTable(sagas, now, message) {
    if (!sagas.length) return h('p', {class: 'empty'}, 'No saga matches.');
    const head = ['Saga', 'Type', 'State', 'Step', 'Try', 'Customer', 'Order', 'Started', 'Changed'];
    if (message) head.push('');
    return h('table', {},
      h('thead', {}, h('tr', {}, head.map((name) => h('th', {}, name)))),
      h('tbody', {}, sagas.map((saga) => h('tr', {
        'data-saga-id': saga.sagaId, 'data-saga-type': saga.sagaType, 'data-state': saga.state,
        'data-needs': saga.needsAPerson || '',
      },
      h('td', {}, sagaLink(saga.sagaId, saga.sagaType)),
      h('td', {}, `${saga.sagaType} v${saga.definitionVersion}`),
      h('td', {}, stateBadge(saga.state), saga.needsAPerson && saga.needsAPerson !== 'parked'
        ? h('span', {class: 'flag'}, saga.needsAPerson) : null,
      saga.parkedReason ? h('div', {class: 'reason'}, saga.parkedReason) : null),
      h('td', {}, saga.state === 'COMPLETED' || saga.state === 'COMPENSATED' ? 'ended'
        : `${saga.compensating ? '↩ ' : ''}${saga.stepName || `step ${saga.currentStep}`}`),
      h('td', {}, saga.attempt || ''),
      h('td', {class: 'mono'}, saga.customerId || ''),
      h('td', {}, saga.orderState || '', saga.rejectionReason ? h('div', {class: 'reason'}, saga.rejectionReason) : null),
      h('td', {title: saga.createdAt, 'data-ago': saga.createdAt}, ago(saga.createdAt, now)),
      h('td', {title: saga.updatedAt, 'data-ago': saga.updatedAt}, ago(saga.updatedAt, now)),
      message ? h('td', {}, saga.state === 'PARKED' ? resumeButton(saga.sagaId, saga.sagaType, message) : null) : null,
      ))));
  }

  function resumeButton(id, type, message) {
    const button = h('button', {type: 'button', class: 'warn', 'data-action': 'resume', 'data-saga-id': id,
      'data-saga-type': type}, 'Resume');
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const done = await postJson(`api/sagas/${id}/resume?type=${encodeURIComponent(type)}`);
        notice(message, true, `Resumed ${done.sagaType} ${id}: ${done.queued} sent again.`);
      } catch (error) {
        notice(message, false, `Not resumed: ${error.message}`);
        button.disabled = false;
      }
      tick();
    });
    return button;
  }

  // --- #/saga/ID ---
  // Each saga over the id keeps its section: its head (with the Resume button) and its diagram are
  // drawn again only when they change, its timeline on every look (an open span grows with the time).
  function sagaView(id) {
    const head = h('div', {});
    const message = h('div', {id: 'message'});
    const body = h('div', {id: 'saga'});
    const sections = new Map();
    $('view').replaceChildren(h('p', {}, h('a', {href: '#/'}, '← all sagas')), message, head, body);
    const self = {
      seconds: () => self.every || 2,
      failed(error) {
        if (error.status === 404) {
          stop();
          body.replaceChildren(h('div', {class: 'notice bad'}, error.message));
        }
      },
      async refresh() {
        const found = await api(`api/sagas/${encodeURIComponent(id)}`);
        self.every = found.refreshSeconds;
        const order = found.order;
        if (!same(self, 'order', order)) {
          put(head, h('h1', {}, 'Saga ', h('span', {class: 'mono'}, id)), order ? h('p', {class: 'order-line'},
            `Order of customer ${order.customerId}: ${order.goodsTotal} × goods ${order.goodsId} for `
            + `${order.orderTotal.amount}, ${order.state}${order.rejectionReason ? ` (${order.rejectionReason})` : ''}`)
            : null);
        }
        const width = Math.max(body.clientWidth - 470 - 16 - 34, 480);
        for (const saga of found.sagas) {
          if (!sections.has(saga.sagaType)) {
            const section = sagaSection(saga);
            sections.set(saga.sagaType, section);
            body.append(section.node);
          }
          sections.get(saga.sagaType).update(saga, width, message);
        }
      },
    };
    return self;
  }

  function sagaSection(first) {
    const head = h('div', {class: 'saga-head'});
    const parked = h('div', {});
    const timeline = h('div', {class: 'timeline-holder'});
    const diagram = h('div', {class: 'diagram-holder'});
    const node = h('section', {class: 'panel saga', 'data-saga-type': first.sagaType},
      head, parked,
      h('div', {class: 'panes'},
        h('div', {class: 'timeline-pane'}, h('div', {class: 'pane-title'}, 'Timeline'), timeline, legend()),
        h('div', {class: 'diagram-pane'}, h('div', {class: 'pane-title'}, `Definition v${first.definitionVersion}`),
          diagram)));
    const shown = {};
    return {
      node,
      update(saga, width, message) {
        node.dataset.state = saga.state;
        const {timeline: drawnTimeline, definition, ...about} = saga;
        if (!same(shown, 'head', about)) {
          const trace = saga.traceUrl
            ? h('a', {href: saga.traceUrl, target: '_blank', rel: 'noopener noreferrer', class: 'trace'}, 'trace ↗')
            : h('span', {class: 'meta trace'}, 'tracing off');
          put(head,
            h('h2', {}, `${saga.sagaType} v${saga.definitionVersion}`), stateBadge(saga.state),
            saga.stuck ? h('span', {class: 'flag'}, 'stuck past its deadline') : null,
            h('span', {class: 'meta'}, saga.finished ? `ended ${new Date(saga.updatedAt).toLocaleString('en-GB')}`
              : `at ${whereAt(saga, definition)}, try ${saga.attempt}`),
            trace,
            saga.state === 'PARKED' ? resumeButton(saga.sagaId, saga.sagaType, message) : null);
          put(parked, saga.parkedReason ? h('div', {class: 'notice bad'}, `Parked: ${saga.parkedReason}`) : null);
        }
        timeline.replaceChildren(drawTimeline(drawnTimeline, width));
        const drawnAs = {definition, state: saga.state, step: saga.currentStep, compensating: saga.compensating};
        if (!same(shown, 'diagram', drawnAs)) {
          diagram.replaceChildren(definition ? drawDiagram(definition, saga)
            : h('p', {class: 'empty'}, 'This build does not have the version this saga runs on.'));
        }
      },
    };
  }

  // The step a saga is at, or, compensating, the compensation it runs.
  function whereAt(saga, definition) {
    const step = definition && definition.steps[saga.currentStep];
    if (saga.compensating && step && step.compensationName) return `${step.compensationName} (undoing ${step.name})`;
    return saga.stepName || `step ${saga.currentStep}`;
  }

  function legend() {
    const entry = (cls, text) => h('span', {}, h('i', {class: cls}), text);
    return h('div', {class: 'legend'}, entry('l-command', 'command → reply'),
      entry('l-compensation', 'compensation'), entry('l-failure', 'failed or timed out'),
      entry('l-retry', 'retry'), entry('l-wait', 'waiting to retry'), entry('l-parked', 'parked'));
  }

  // --- the timeline, drawn ---
  function niceStep(rough) {
    const power = 10 ** Math.floor(Math.log10(Math.max(rough, 0.001)));
    return [1, 2, 5, 10].map((m) => m * power).find((step) => step >= rough);
  }

  function textWidth(text) {
    return text.length * 6.3;
  }

  function drawTimeline(tl, width) {
    const L = 168, R = 24, T = 50, LH = 36, B = 10;
    const count = Math.max(tl.lanes.length, ...tl.items.map((item) => item.lane + 1), 1);
    const height = T + count * LH + B;
    const span = Math.max(tl.durationMs, 1);
    const x = (t) => L + (Math.min(Math.max(t, 0), span) / span) * (width - L - R);
    const svg = s('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'timeline', role: 'img',
      'aria-label': 'the saga\'s timeline'});
    const top = (lane) => T + lane * LH;
    for (let lane = 0; lane < count; lane += 1) {
      const info = tl.lanes[lane] || {name: `step ${lane}`};
      add(svg, s('rect', {class: `tl-lane${lane % 2 ? ' odd' : ''}`, x: 0, y: top(lane), width, height: LH}),
        s('text', {class: 'tl-label', x: 8, y: top(lane) + 15}, `${lane + 1}. ${info.name}`),
        info.compensation ? s('text', {class: 'tl-sublabel', x: 20, y: top(lane) + 29}, `↩ ${info.compensation}`) : null);
    }
    const axis = s('g', {class: 'tl-axis'});
    const step = niceStep(span / 6);
    for (let t = 0; t <= span + step / 1000; t += step) {
      axis.append(s('line', {class: 'tl-grid', x1: x(t), x2: x(t), y1: T - 4, y2: height - B}),
        s('text', {x: x(t), y: T - 8, 'text-anchor': t === 0 ? 'start' : 'middle'}, t === 0 ? '0' : duration(t)));
    }
    svg.append(axis);
    tl.marks.filter((mark) => mark.lane === null).forEach((mark, index) => {
      const at = x(mark.at);
      const leftward = at > L + (width - L - R) * 0.6; // near the right end: the label ends at its line
      const y = 12 + (index % 2) * 13;
      svg.append(s('g', {class: 'moment', 'data-event': mark.event},
        s('line', {class: 'tl-moment', x1: at, x2: at, y1: y - 8, y2: height - B}),
        s('text', {class: 'tl-moment-label', x: leftward ? at - 3 : at + 3, y, 'text-anchor': leftward ? 'end' : 'start'},
          mark.event.toLowerCase()),
        s('title', {}, `${mark.event} at ${duration(mark.at)}${mark.outcome ? `: ${mark.outcome}` : ''}`)));
    });
    if (tl.nowMs && !tl.marks.some((mark) => mark.event === 'FINISHED')) {
      svg.append(s('line', {class: 'tl-now', x1: x(tl.nowMs), x2: x(tl.nowMs), y1: T - 4, y2: height - B}));
    }
    const byLane = {};
    for (const item of tl.items) (byLane[item.lane] = byLane[item.lane] || []).push(item);
    // Waits and parked time behind, the steps in front; each layer in the order things happened.
    const behind = s('g', {class: 'behind'});
    const front = s('g', {class: 'front'});
    // Per lane, what is drawn there: a label goes only where it covers nothing else.
    const room = {};
    const extent = (item) => {
      const at = x(item.start);
      const point = item.kind === 'local' || item.kind === 'local-compensation';
      return point ? [at - 8, at + 8] : [at - 1, Math.max(x(item.end ?? tl.nowMs), at + 3) + 1];
    };
    for (const [lane, items] of Object.entries(byLane)) {
      const taken = items.filter((item) => item.kind !== 'retry-wait' && item.kind !== 'parked').map(extent);
      room[lane] = {
        free: (a, b) => a >= L + 4 && b <= width - 4 && taken.every(([c, d]) => b <= c || a >= d),
        take: (a, b) => taken.push([a, b]),
      };
    }
    tl.items.forEach((item, index) => {
      const layer = item.kind === 'retry-wait' || item.kind === 'parked' ? behind : front;
      layer.append(drawItem(item, index, x, top(item.lane), LH, room[item.lane], tl.nowMs));
    });
    svg.append(behind, front);
    for (const mark of tl.marks.filter((mark) => mark.lane !== null && mark.event !== 'PARKED')) {
      svg.append(drawMark(mark, x(mark.at), top(mark.lane)));
    }
    return svg;
  }

  function drawItem(item, index, x, top, LH, room, nowMs) {
    const end = item.end ?? (item.kind === 'retry-wait' ? Math.min(item.plannedEnd ?? nowMs, nowMs) : nowMs);
    const x1 = x(item.start);
    const x2 = Math.max(x(end), x1 + 3);
    const middle = top + LH / 2;
    const classes = ['item', `kind-${item.kind}`, `result-${item.result}`];
    if (item.outcome) classes.push(`outcome-${item.outcome}`);
    if ((item.attempt || 1) > 1 || item.resumed) classes.push('retry');
    const group = s('g', {class: classes.join(' '), 'data-kind': item.kind, 'data-name': item.name,
      'data-lane': item.lane, 'data-result': item.result, 'data-outcome': item.outcome || '',
      'data-order': index});
    // The first of these that fits: after the item, inside its bar, before it; the long text, then the short.
    const point = item.kind === 'local' || item.kind === 'local-compensation';
    const [left, right] = point ? [x1 - 8, x1 + 8] : [x1, x2];
    const label = (texts, inside) => {
      const place = (text, at, anchor, cls) => {
        group.append(s('text', {class: cls, x: at, y: middle + 4, 'text-anchor': anchor}, text));
        return true;
      };
      for (const text of texts.filter(Boolean)) {
        const w = textWidth(text);
        if (room.free(right + 4, right + 6 + w)) return room.take(right + 4, right + 6 + w) && place(text, right + 5, 'start', 'text');
        if (inside && w + 12 <= x2 - x1) return place(text, x1 + 6, 'start', 'text inside');
        if (room.free(left - 6 - w, left - 4)) return room.take(left - 6 - w, left - 4) && place(text, left - 5, 'end', 'text');
      }
      return false;
    };
    if (item.kind === 'command' || item.kind === 'compensation') {
      group.append(s('rect', {class: 'bar', x: x1, y: top + 9, width: x2 - x1, height: LH - 18, rx: 2}));
      const tries = (item.attempt || 1) > 1 ? `try ${item.attempt} · ` : '';
      const answer = item.result === 'replied' ? item.reply : item.result === 'waiting' ? 'waiting…' : item.result;
      const took = item.latencyMs !== null ? ` · ${duration(item.latencyMs)}` : '';
      label([`${tries}${answer}${took}`, `${answer}${took}`, took.slice(3) || answer], true);
      group.append(s('title', {}, `${item.kind} ${item.name}: ${item.commandType || ''} `
        + `${item.reply ? `→ ${item.reply} (${item.outcome})` : `(${item.result})`}${took}`
        + `${tries ? `, ${tries.slice(0, -3)}` : ''}${item.resent ? ', resent under the same id' : ''}`
        + `${item.resumed ? ', after a resume' : ''}`));
    } else if (item.kind === 'local' || item.kind === 'local-compensation') {
      const r = 7;
      group.append(s('polygon', {class: 'dot', points: `${x1},${middle - r} ${x1 + r},${middle} ${x1},${middle + r} ${x1 - r},${middle}`}));
      label([item.name], false);
      group.append(s('title', {}, `${item.kind === 'local' ? 'local step' : 'local compensation'} ${item.name}`));
    } else if (item.kind === 'retry-wait') {
      group.append(s('line', {class: 'wait', x1, x2, y1: middle, y2: middle}));
      group.append(s('title', {}, `waiting to retry ${item.name} (after try ${item.attempt}): ${item.reason || ''}`));
    } else if (item.kind === 'parked') {
      group.append(s('rect', {class: 'band', x: x1, y: top + 4, width: x2 - x1, height: LH - 8, rx: 3}));
      const w = textWidth('PARKED');
      if (x2 - x1 > w + 12 && room.free(x2 - 8 - w, x2 - 4)) {
        group.append(s('text', {class: 'text', x: x2 - 6, y: middle + 4, 'text-anchor': 'end'}, 'PARKED'));
      }
      group.append(s('title', {}, `parked: ${item.reason || ''}`));
    }
    return group;
  }

  function drawMark(mark, at, top) {
    const y = top + 6;
    const shapes = {
      TIMED_OUT: () => s('polygon', {class: 'timed-out', points: `${at - 6},${y - 4} ${at + 6},${y - 4} ${at},${y + 6}`}),
      RESUMED: () => s('polygon', {class: 'resumed', points: `${at - 4},${y - 6} ${at + 7},${y} ${at - 4},${y + 6}`}),
      REPLY_IGNORED: () => s('circle', {class: 'ignored', cx: at, cy: y, r: 4}),
      SWEEP_FAILED: () => s('path', {class: 'sweep-failed', d: `M${at - 4},${y - 4}L${at + 4},${y + 4}M${at + 4},${y - 4}L${at - 4},${y + 4}`}),
    };
    const details = ['reason', 'by', 'parkedFor', 'overdueBy', 'attempt'].filter((key) => mark[key] !== undefined)
      .map((key) => `${key}: ${mark[key]}`).join(', ');
    return s('g', {class: 'mark', 'data-event': mark.event}, (shapes[mark.event] || shapes.REPLY_IGNORED)(),
      s('title', {}, `${mark.event} ${mark.name} at ${duration(mark.at)}${details ? ` (${details})` : ''}`));
  }

  // --- the definition, drawn ---
  function drawDiagram(outline, saga) {
    const XF = 8, BW = 236, XC = 280, CW = 172, BH = 64, CH = 44, RH = 90, T = 66;
    const steps = outline.steps;
    const width = XC + CW + 12;
    const height = T + steps.length * RH + 40;
    const arrow = `arrow-${drawn += 1}`;
    const back = `${arrow}-back`;
    const svg = s('svg', {width, height, viewBox: `0 0 ${width} ${height}`, class: 'diagram', role: 'img',
      'aria-label': `${outline.type} v${outline.version}`},
    s('defs', {},
      s('marker', {id: arrow, viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto'},
        s('path', {class: 'arrowhead', d: 'M0,0L8,4L0,8z'})),
      s('marker', {id: back, viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto'},
        s('path', {class: 'arrowhead back', d: 'M0,0L8,4L0,8z'}))));
    const edge = (d, cls, marker) => svg.append(s('path', {class: `edge ${cls || ''}`, d, 'marker-end': `url(#${marker || arrow})`}));
    const current = currentNode(steps, saga);
    const node = (key, name, cls, x, y, w, hgt, lines, title, rounded) => {
      const group = s('g', {class: `node ${cls}`, 'data-node': key, 'data-name': name,
        'data-current': key === current ? 'true' : null},
      s('rect', {x, y, width: w, height: hgt, rx: rounded ? 14 : 4}),
      s('text', {class: 'name', x: x + 10, y: y + 18}, name),
      lines.map((line, index) => s('text', {class: 'sub', x: x + 10, y: y + 33 + index * 13}, line)),
      s('title', {}, title));
      if (key === current && saga.state === 'PARKED') group.classList.add('parked-here');
      svg.append(group);
      return group;
    };
    const centre = XF + BW / 2;
    svg.append(s('circle', {cx: centre, cy: 16, r: 7, fill: '#455a64'}),
      s('text', {class: 'edge-label', x: centre + 12, y: 20}, 'start'));
    edge(`M${centre},23L${centre},${T - 2}`);
    let above = null; // the compensation box above, which the next compensation (run before it) points up to
    steps.forEach((step, index) => {
      const y = T + index * RH;
      const badges = [step.pivot ? 'pivot' : null, step.retriable ? 'retried, never compensated' : null,
        step.timeout ? 'deadline' : null].filter(Boolean);
      const lines = step.kind === 'remote'
        ? [`${step.commandClass} → ${participant(step.participant)}`, badges.join(' · ')]
        : ['local step', badges.join(' · ')];
      if (textWidth(lines[0]) * 0.9 > BW - 16) lines.splice(0, 1, step.commandClass, `→ ${participant(step.participant)}`);
      const replies = (step.reactions || []).map((r) => `${r.reply} (${r.outcome}) → ${r.then}`).join('\n');
      node(`step-${index}`, step.name, `step ${step.kind}${step.pivot ? ' pivot' : ''}${step.retriable ? ' retriable' : ''}`,
        XF, y, BW, BH, lines.filter(Boolean), `${step.name}${replies ? `\n${replies}` : ''}`, step.kind === 'local');
      edge(`M${centre},${y + BH}L${centre},${y + RH - 2}`);
      if (step.compensation) {
        const cy = y + (BH - CH) / 2;
        node(`undo-${index}`, step.compensationName, 'undo', XC, cy, CW, CH,
          [step.kind === 'remote' ? `→ ${participant(step.compensationParticipant)}` : 'local'],
          `compensates ${step.name}`, false);
        edge(`M${XF + BW},${y + BH / 2}L${XC - 2},${y + BH / 2}`, 'fail', back);
        if (above !== null) edge(`M${XC + CW / 2},${cy}L${XC + CW / 2},${above + CH + 2}`, 'back', back);
        above = cy;
      }
    });
    const endY = T + steps.length * RH;
    node('completed', 'COMPLETED', 'end', XF + 30, endY, BW - 60, 28, [], 'the saga ran every step', true);
    const firstUndo = steps.find((step) => step.compensation);
    if (firstUndo) {
      node('compensated', 'COMPENSATED', 'end', XC + 10, 8, CW - 20, 28, [], 'every completed step was undone', true);
      const top = T + firstUndo.index * RH + (BH - CH) / 2;
      edge(`M${XC + CW / 2},${top}L${XC + CW / 2},${38}`, 'back', back);
    }
    return svg;
  }

  function currentNode(steps, saga) {
    if (saga.state === 'COMPLETED') return 'completed';
    if (saga.state === 'COMPENSATED') return 'compensated';
    const step = steps[saga.currentStep];
    if (!step) return saga.compensating ? 'compensated' : 'completed';
    return saga.compensating && step.compensation ? `undo-${saga.currentStep}` : `step-${saga.currentStep}`;
  }

  // --- #/dead-letters ---
  function deadLettersView() {
    const message = h('div', {id: 'message'});
    const actions = h('div', {class: 'actions', id: 'redrive'});
    const list = h('section', {class: 'panel', id: 'dead-letters'});
    $('view').replaceChildren(h('h1', {}, 'Dead letters'), message,
      h('p', {class: 'hint'}, 'Events a Trigger gave up on, with the error its function answered. A redrive delivers '
        + 'them again with the Trigger\'s rules (saga replay --dead-letters); what fails again is parked again.'),
      actions, list);
    const self = {
      seconds: () => Math.max(self.every || 2, DEAD_LETTER_REFRESH),
      async refresh() {
        const found = await api('api/dead-letters');
        if (same(self, 'shown', found)) return;
        const per = {};
        for (const letter of found.deadLetters) per[letter.trigger] = (per[letter.trigger] || 0) + 1;
        actions.replaceChildren(
          redriveButton(null, `Redrive all (${found.count})`, message, !found.count),
          ...Object.entries(per).map(([trigger, count]) => redriveButton(trigger, `Redrive ${trigger} (${count})`, message)));
        list.replaceChildren(found.deadLetters.length ? deadLetterTable(found.deadLetters)
          : h('p', {class: 'empty'}, 'No dead letter waits for a redrive.'));
      },
    };
    return self;
  }

  function redriveButton(trigger, text, message, disabled) {
    const button = h('button', {type: 'button', class: 'warn', 'data-action': 'redrive', 'data-trigger': trigger || 'all',
      'data-empty': disabled ? 'true' : null, disabled}, text);
    button.addEventListener('click', async () => {
      for (const other of document.querySelectorAll('[data-action="redrive"]')) other.disabled = true;
      notice(message, true, `Redriving ${trigger || 'every Trigger'}…`);
      try {
        const report = await postJson('api/dead-letters/redrive', {trigger});
        const total = report.total;
        notice(message, total.dead_lettered === 0, `Redriven ${total.matched}: ${total.delivered} delivered, `
          + `${total.replies} replies published, ${total.dead_lettered} parked again.`);
      } catch (error) {
        notice(message, false, `Not redriven: ${error.message}`);
      }
      // Drawn again if the list changed; if not, the same buttons work again.
      for (const other of document.querySelectorAll('[data-action="redrive"]')) other.disabled = other.dataset.empty === 'true';
      tick();
    });
    return button;
  }

  function deadLetterTable(letters) {
    return h('table', {},
      h('thead', {}, h('tr', {}, ['Parked', 'Trigger', 'Event', 'Saga', 'Answer', 'Error'].map((name) => h('th', {}, name)))),
      h('tbody', {}, letters.map((letter) => h('tr', {'data-event-id': letter.id, 'data-trigger': letter.trigger,
        'data-saga-id': letter.sagaId || ''},
      h('td', {title: letter.parkedAt || ''}, letter.parkedAt ? new Date(letter.parkedAt).toLocaleString('en-GB') : ''),
      h('td', {}, letter.trigger),
      h('td', {}, letter.type, h('div', {class: 'reason mono', title: `source ${letter.source}`}, letter.id)),
      h('td', {}, letter.sagaId ? sagaLink(letter.sagaId, letter.sagaType) : ''),
      h('td', {}, letter.errorCode || ''),
      h('td', {class: 'reason'}, letter.error || '')))));
  }

  // --- routing ---
  function route() {
    if (!session) return signOut();
    $('login').hidden = true;
    $('nav').hidden = false;
    $('session').hidden = false;
    $('who').textContent = session.username;
    const hash = location.hash || '#/';
    const saga = hash.match(/^#\/saga\/([^/?]+)$/);
    let next;
    if (saga) next = sagaView(decodeURIComponent(saga[1]));
    else if (hash.startsWith('#/dead-letters')) next = deadLettersView();
    else next = sagasView(hash.includes('?') ? hash.slice(hash.indexOf('?') + 1) : '');
    for (const link of document.querySelectorAll('[data-nav]')) {
      link.classList.toggle('active', link.dataset.nav === (hash.startsWith('#/dead-letters') ? 'dead-letters' : 'sagas'));
    }
    start(next);
  }

  window.addEventListener('hashchange', route);
  let resized = null;
  window.addEventListener('resize', () => {
    clearTimeout(resized);
    resized = setTimeout(() => view && tick(), 200);
  });

  $('login-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = event.target;
    const button = form.querySelector('button');
    button.disabled = true;
    $('login-error').textContent = '';
    try {
      const username = form.elements.username.value;
      keep(await post('auth/login', {username, password: form.elements.password.value}), username);
      form.reset();
      route();
    } catch (error) {
      $('login-error').textContent = error.status === 401 ? 'Wrong username or password.' : error.message;
    } finally {
      button.disabled = false;
    }
  });
  $('logout').addEventListener('click', () => signOut());
  route();
})();
