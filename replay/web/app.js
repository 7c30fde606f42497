// The web view of `lmg serve` (docs/web.md). Every view is built here from the service's
// public JSON routes. Safety rule: content from the store (prompts, responses, tool
// arguments, names) only ever becomes DOM text nodes or attribute values through `el`;
// nothing is parsed as HTML (no innerHTML anywhere), so a prompt cannot inject markup.
"use strict";

const TOKEN_KEY = "lmg.token";
const SCOPES_KEY = "lmg.scopes"; // the token's scopes, kept for the tab: `tokenScopes`
const LONG = 600; // characters past which content is folded in <details>
const SVG = "http://www.w3.org/2000/svg";

// -- DOM ----------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG, tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function replace(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function status(text, kind) {
  const box = document.getElementById("status");
  box.className = kind || "";
  box.textContent = text || "";
}

// -- the routes ---------------------------------------------------------------------------

const path = location.pathname.replace(/\/+$/, "").split("/").slice(2).map(decodeURIComponent);
const params = new URLSearchParams(location.search);
const at = params.get("at") || "";
const store = path[0] === "stores" ? path[1] : null;
const api = store ? `/v1/stores/${encodeURIComponent(store)}` : "/v1";

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function headers(extra) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return Object.assign(token ? { Authorization: `Bearer ${token}` } : {}, extra || {});
}

async function getJson(url, options) {
  const response = await fetch(url, Object.assign({ headers: headers() }, options || {}));
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = body.error || {};
    throw new HttpError(response.status, error.code || "error", error.message || response.statusText);
  }
  return body;
}

function withAt(url, extra) {
  const query = new URLSearchParams(extra || {});
  if (at) query.set("at", at);
  const text = query.toString();
  return text ? `${url}${url.includes("?") ? "&" : "?"}${text}` : url;
}

function ui(...parts) {
  return `/ui/stores/${encodeURIComponent(store)}/${parts.map(encodeURIComponent).join("/")}`;
}

function link(href, ...children) {
  return el("a", { href: at && !href.includes("at=") ? withAt(href) : href }, ...children);
}

function lineageLink(id, what) {
  const a = link(ui("lineage", id), "lineage");
  a.setAttribute("aria-label", `Lineage of this ${what}`);
  return a;
}

// -- small formatters ---------------------------------------------------------------------

function when(ns) {
  if (ns === null || ns === undefined) return "";
  return new Date(Number(ns) / 1e6).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function short(id) {
  return String(id).slice(-12);
}

const FORMATS = [0, 1].map((digits) => new Intl.NumberFormat("en", { maximumFractionDigits: digits }));

function num(value, digits) {
  if (value === null || value === undefined) return "";
  return FORMATS[digits ? 1 : 0].format(Number(value)); // one formatter: a page has thousands
}

function pretty(value) {
  if (value === null || value === undefined) return "";
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

function content(text, label) {
  const body = el("pre", { class: "content" }, text || "");
  if (!text || text.length <= LONG) return body;
  return el("details", { class: "long" }, el("summary", {}, `${label}: ${text.slice(0, 120)}…`), body);
}

function describe(node) {
  if (!node) return "(not in the projections)";
  switch (node.node_type) {
    case "prompt":
    case "response":
      return `${node.node_type}: ${(node.content || "").slice(0, 60)}`;
    case "agent":
      return `agent ${node.name}`;
    case "template":
      return `template ${node.name} v${node.version}`;
    case "tool_invocation":
      return `tool ${node.tool_name} (${node.status})`;
    case "session":
      return `session ${short(node.id)}`;
    default:
      return `${node.node_type || node.kind || "node"} ${short(node.id)}`;
  }
}

// -- chrome: navigation, sign-in, time travel, live ---------------------------------------

function nav() {
  const box = document.getElementById("nav");
  if (!store) return;
  const pages = [["Sessions", ui("sessions")], ["Agents", ui("agents")],
    ["Templates", ui("templates")], ["SQL", ui("sql")]];
  replace(box, el("ul", {}, pages.map(([name, href]) => {
    const current = location.pathname.startsWith(href) ? "page" : null;
    return el("li", {}, el("a", { href: withAt(href), "aria-current": current }, name));
  })), el("span", { class: "store" }, `store: ${store}`));
}

function signIn(main, message) {
  const input = el("input", { id: "token", type: "password", autocomplete: "off", required: true });
  const form = el("form", { class: "signin", onsubmit: (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    sessionStorage.removeItem(SCOPES_KEY);
    location.reload();
  } },
  el("h1", {}, "Sign in"),
  el("p", {}, message),
  el("label", { for: "token" }, "Token"), input,
  el("button", { type: "submit" }, "Sign in"));
  replace(main, form);
  input.focus();
}

// The token's scopes, asked of /v1/stores once a tab (and again after signing in), not at
// every move of the time bar: each one loads the page again.
async function tokenScopes() {
  const kept = sessionStorage.getItem(SCOPES_KEY);
  if (kept !== null) return JSON.parse(kept);
  const { scopes } = await getJson("/v1/stores");
  sessionStorage.setItem(SCOPES_KEY, JSON.stringify(scopes));
  return scopes;
}

// A JSON body with the point `at` (none if empty): an LSN goes as its own digits, a JSON
// number that no JavaScript number rounds on the way (above 2^53 one would); a time as text.
function jsonAt(body, at) {
  const json = JSON.stringify(body);
  if (!at) return json;
  const value = /^-?\d+$/.test(at) ? at.replace(/^(-?)0+(?=\d)/, "$1") : JSON.stringify(at);
  return `{"at":${value}${json === "{}" ? "" : `,${json.slice(1, -1)}`}}`;
}

async function timebar() {
  const box = document.getElementById("timebar");
  if (!store) return;
  let position, scopes;
  try {
    [position, scopes] = await Promise.all([getJson(`${api}/position`), tokenScopes()]);
  } catch {
    return; // the page's own request says why
  }
  const last = Math.max(0, position.next_lsn - 1);
  const value = at && /^\d+$/.test(at) ? Math.min(Number(at), last) : last;
  const input = el("input", { id: "at", name: "at", value: at, placeholder: `0…${last} or 2026-01-01T00:00Z`,
    size: 22 });
  const slider = el("input", { id: "slider", type: "range", min: 0, max: last, value,
    "aria-label": "Point in history (LSN)" });
  slider.addEventListener("input", () => { input.value = slider.value; });
  slider.addEventListener("change", () => go(slider.value));
  function go(point) {
    const query = new URLSearchParams(location.search);
    if (point === "" || point === null) query.delete("at"); else query.set("at", point);
    const text = query.toString();
    location.assign(location.pathname + (text ? `?${text}` : ""));
  }
  const form = el("form", { "aria-label": "Time travel", onsubmit: (event) => {
    event.preventDefault();
    go(input.value.trim());
  } },
  el("label", { for: "at" }, "At"), input, slider,
  el("button", { type: "submit" }, "Go"),
  at ? el("a", { href: location.pathname, class: "now" }, "Back to now") : null,
  at ? el("a", { href: `${ui("diff")}?from=${encodeURIComponent(at)}&to=${last}` }, "Diff to now") : null);
  replace(box, form, scopes.includes("admin") ? forkForm(() => input.value.trim() || slider.value) : null,
    el("p", { class: at ? "past" : "live" }, at
      ? `Showing the store as it was at ${/^\d+$/.test(at) ? "LSN " : ""}${at} (the log's end is LSN ${last}).`
      : `Now: LSN ${last}.`));
  return position;
}

// "Fork from here" (admin tokens only): a new store holding the log up to the chosen point,
// made by the service beside this one and served under the name given.
function forkForm(point) {
  const name = el("input", { id: "fork-name", name: "fork-name", size: 16, required: true,
    pattern: "[A-Za-z0-9][A-Za-z0-9_\\-]{0,63}", placeholder: "letters, digits, - _" });
  const out = el("p", { class: "fork-result", "aria-live": "polite" });
  async function fork(event) {
    event.preventDefault();
    replace(out, "Forking…");
    try {
      const made = await getJson(`${api}/fork`, { method: "POST",
        headers: headers({ "Content-Type": "application/json" }), body: jsonAt({ name: name.value.trim() }, point()) });
      replace(out, `Forked ${num(made.events)} events (up to LSN ${made.last_lsn}) into store ${made.store}: `,
        el("a", { href: `/ui/stores/${encodeURIComponent(made.store)}/sessions` }, `open ${made.store}`));
    } catch (error) {
      replace(out, el("span", { class: "error-text", role: "alert" }, `${error.code}: ${error.message}`));
    }
  }
  return el("details", { class: "fork" }, el("summary", {}, "Fork from here"),
    el("form", { "aria-label": "Fork from here", onsubmit: fork },
      el("label", { for: "fork-name" }, "New store's name"), name,
      el("button", { type: "submit" }, "Fork")), out);
}

// Follow the log (Server-Sent Events over fetch, so the bearer token goes with it) and call
// `changed` shortly after events arrive; reconnect after a failure.
function live(from, changed, wanted) {
  let timer = null;
  let next = from;
  async function run() {
    try {
      const response = await fetch(`${api}/events?from=${next}&follow=true`,
        { headers: headers({ Accept: "text/event-stream" }) });
      if (!response.ok) return;
      status("Live: this page updates as events arrive.", "live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          if (!data) continue;
          const record = JSON.parse(data);
          next = record.lsn + 1;
          if (!wanted || wanted(record)) {
            // At most one reload per 250 ms: a steady stream of events still shows.
            timer = timer || setTimeout(() => { timer = null; changed(); }, 250);
          }
        }
      }
    } catch {
      // the connection dropped: try again below
    }
    status("Live: reconnecting…", "live");
    setTimeout(run, 2000);
  }
  run();
}

// Follow the log, unless the page shows the past, from just after the fold's checkpoint as
// the time bar read it (asked before the page's data, so the data holds at least that much):
// an event the data already holds costs one needless reload, none is missed.
async function follow(position, changed) {
  const known = await position;
  if (!at && known) live(known.folded_lsn + 1, changed);
}

// -- pages --------------------------------------------------------------------------------

async function storesPage(main) {
  const { stores } = await getJson("/v1/stores");
  if (stores.length === 1) {
    location.replace(`/ui/stores/${encodeURIComponent(stores[0])}/sessions`);
    return;
  }
  document.title = "Stores · llm-memory-graph";
  replace(main, el("h1", {}, "Stores"), el("ul", {}, stores.map((name) =>
    el("li", {}, el("a", { href: `/ui/stores/${encodeURIComponent(name)}/sessions` }, name)))));
}

const COLUMNS = [
  ["Session", null], ["User", null], ["Agents", null], ["Models", null], ["Turns", "turns"],
  ["Tokens", "tokens"], ["Latency (ms)", "latency"], ["Tool failures", "failures"],
  ["Last activity", "last_activity"],
];

async function sessionsPage(main, position) {
  document.title = `Sessions · ${store}`;
  const fields = [["q", "Search", "search", "text in prompts, responses, metadata, agents, models"],
    ["user", "User", "text", ""], ["agent", "Agent", "text", ""], ["model", "Model", "text", ""],
    ["since", "Active since", "text", "2026-01-01T00:00Z"], ["until", "Active until", "text", ""]];
  const form = el("form", { class: "filters", role: "search", method: "get", action: location.pathname },
    fields.map(([name, label, type, hint]) => el("div", {},
      el("label", { for: `f-${name}` }, label),
      el("input", { id: `f-${name}`, name, type, value: params.get(name) || "", placeholder: hint || null }))),
    at ? el("input", { type: "hidden", name: "at", value: at }) : null,
    params.get("sort") ? el("input", { type: "hidden", name: "sort", value: params.get("sort") }) : null,
    params.get("order") ? el("input", { type: "hidden", name: "order", value: params.get("order") }) : null,
    el("button", { type: "submit" }, "Search"));
  const results = el("div", { class: "results" });
  replace(main, el("h1", {}, "Sessions"), form, results);
  async function load() {
    const query = new URLSearchParams(params);
    const page = await getJson(`${api}/sessions?${query}`);
    renderSessions(results, page);
  }
  await load();
  follow(position, load);
}

function renderSessions(box, page) {
  const sort = params.get("sort") || "last_activity";
  const order = params.get("order") || "desc";
  const head = el("tr", {}, COLUMNS.map(([label, key]) => {
    if (!key) return el("th", { scope: "col" }, label);
    const query = new URLSearchParams(params);
    const next = key === sort && order === "desc" ? "asc" : "desc";
    query.set("sort", key);
    query.set("order", next);
    query.delete("offset");
    const ariaSort = key === sort ? (order === "asc" ? "ascending" : "descending") : null;
    return el("th", { scope: "col", "aria-sort": ariaSort },
      el("a", { href: `?${query}` }, label, key === sort ? (order === "asc" ? " ▲" : " ▼") : ""));
  }));
  const rows = page.sessions.map((s) => el("tr", { class: s.tool_failures ? "failed" : null },
    el("td", {}, link(ui("sessions", s.id), short(s.id))),
    el("td", {}, s.user || ""),
    el("td", {}, s.agents.join(", ")),
    el("td", {}, s.models.join(", ")),
    el("td", { class: "n" }, num(s.turns)),
    el("td", { class: "n" }, num(s.tokens)),
    el("td", { class: "n" }, num(s.latency_ms)),
    el("td", { class: "n" }, num(s.tool_failures)),
    el("td", {}, when(s.last_activity_ts))));
  const first = page.total ? page.offset + 1 : 0;
  const lastShown = page.offset + page.sessions.length;
  function pageLink(offset, label) {
    const query = new URLSearchParams(params);
    query.set("offset", Math.max(0, offset));
    return el("a", { href: `?${query}` }, label);
  }
  replace(box,
    el("div", { class: "scroll" }, el("table", { class: "sessions" },
      el("caption", {}, `Sessions ${first}–${lastShown} of ${num(page.total)}${page.exact ? "" : " or more"}`),
      el("thead", {}, head), el("tbody", {}, rows))),
    el("nav", { class: "pager", "aria-label": "Pages of sessions" },
      page.offset > 0 ? pageLink(page.offset - page.limit, "← Newer page") : null,
      lastShown < page.total ? pageLink(lastShown, "Older page →") : null));
}

// A long session arrives in steps: the first screen of turns is drawn as soon as it
// arrives, and the rest follows in larger requests, drawn a slice at a time between
// frames, so the page can be read and used while it fills.
const FIRST_TURNS = 40;
const MORE_TURNS = 500;
const SLICE = 100; // turns drawn between two frames
const MAX_TURNS = 5000; // the most a page shows (the SQL console reads any)

const nextFrame = () => new Promise((resolve) => setTimeout(resolve, 0));

async function sessionPage(main, position, id) {
  document.title = `Session ${short(id)} · ${store}`;
  let generation = 0; // a newer load (live) abandons an older one still filling
  const view = (offset, limit) =>
    getJson(withAt(`${api}/sessions/${encodeURIComponent(id)}/view`, { offset, limit }));
  // The first load draws a screenful at once and fills in; a live reload reads every turn
  // before it redraws, so the page keeps its length and the reader's place.
  async function load(first) {
    const mine = ++generation;
    const open = new Set([...main.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
    const reopen = () => {
      for (const details of main.querySelectorAll("details[data-key]")) {
        if (open.has(details.dataset.key)) details.open = true;
      }
    };
    let page = await view(0, first ? FIRST_TURNS : MAX_TURNS);
    if (mine !== generation) return;
    let shown = page.turns.length;
    let more = page.truncated && shown < MAX_TURNS ? view(shown, MORE_TURNS) : null; // asked for while drawing
    const session = renderSession(main, page);
    reopen();
    while (more) {
      page = await more;
      if (mine !== generation) return;
      const from = shown;
      shown += page.turns.length;
      more = page.truncated && shown < MAX_TURNS ? view(shown, Math.min(MORE_TURNS, MAX_TURNS - shown)) : null;
      for (let i = 0; i < page.turns.length; i += SLICE) {
        await nextFrame();
        if (mine !== generation) return;
        session.add(page.turns.slice(i, i + SLICE), from + i);
      }
    }
    session.done(page.truncated);
    reopen();
  }
  await load(true);
  follow(position, () => load(false));
}

function renderSession(main, view) {
  const s = view.session;
  const agents = view.agents;
  const lanes = new Map();
  const lane = (agentId) => {
    if (!agentId) return "lane-none";
    if (!lanes.has(agentId)) lanes.set(agentId, lanes.size % 6);
    return `lane-${lanes.get(agentId)}`;
  };
  const name = (agentId) => (agentId ? agents[agentId] || short(agentId) : "no agent");
  const meta = el("dl", { class: "meta" },
    el("dt", {}, "User"), el("dd", {}, (s.metadata && (s.metadata.user || s.metadata.user_id)) || ""),
    el("dt", {}, "Metadata"), el("dd", {}, el("code", {}, JSON.stringify(s.metadata || {}))),
    el("dt", {}, "Tags"), el("dd", {}, (s.tags || []).join(", ")),
    el("dt", {}, "Started"), el("dd", {}, when(s.first_activity_ts)),
    el("dt", {}, "Last activity"), el("dd", {}, when(s.last_activity_ts)),
    el("dt", {}, "Totals"), el("dd", {}, `${num(s.prompt_count)} prompts, ${num(s.response_count)} responses, `
      + `${num(s.tool_count)} tool calls, ${num(s.prompt_tokens + s.completion_tokens)} tokens`),
    s.parent_session_id ? [el("dt", {}, "Forked from"),
      el("dd", {}, link(ui("sessions", s.parent_session_id), short(s.parent_session_id)))] : null);
  const turn = (t, index) => {
    const p = t.prompt;
    return el("article", { class: `turn ${lane(p.agent_id)}`, "aria-labelledby": `turn-${index}` },
      el("h2", { id: `turn-${index}` }, `Turn ${index + 1}`,
        el("span", { class: "agent" }, name(p.agent_id)),
        p.model ? el("span", { class: "model" }, p.model) : null),
      el("section", { class: "prompt", "aria-label": "Prompt" },
        el("h3", {}, "Prompt ", lineageLink(p.id, "prompt")),
        content(p.content, "Prompt")),
      t.responses.map((r) => [
        el("section", { class: "response", "aria-label": "Response" },
          el("h3", {}, "Response ", lineageLink(r.id, "response")),
          content(r.content, "Response"),
          el("p", { class: "numbers" },
            `${num(r.prompt_tokens)} tokens in, ${num(r.completion_tokens)} out`,
            r.latency_ms !== null ? `, ${num(r.latency_ms)} ms` : "",
            r.model ? `, ${r.model}` : "", r.finish_reason ? `, ${r.finish_reason}` : ""),
          r.tools.map((x) => tool(x))),
        r.handoffs.map((h) => el("p", { class: "handoff", role: "note" },
          el("strong", {}, "Handoff: "), `${name(h.from_agent_id)} → ${name(h.to_agent_id)}`,
          h.reason ? ` (${h.reason})` : "",
          h.context_summary ? el("span", { class: "summary" }, ` — ${h.context_summary}`) : null)),
      ]));
  };
  const turns = el("div", { class: "turns" }, view.turns.map((t, i) => turn(t, i)));
  const note = el("div", { "aria-live": "polite" },
    view.truncated ? el("p", { class: "filling" }, "Loading the other turns…") : null);
  replace(main,
    el("h1", {}, `Session ${short(s.id)}`),
    el("p", {}, el("code", {}, s.id), " · ", lineageLink(s.id, "session")),
    meta,
    view.turns.length ? turns : el("p", {}, "No turns yet."),
    note,
    view.spans.length ? waterfall(view.spans) : null);
  return {
    add(more, from) {
      append(turns, more.map((t, i) => turn(t, from + i)));
    },
    done(truncated) {
      replace(note, truncated ? el("p", { role: "note" },
        `Only the first ${turns.children.length} turns are shown; the SQL console reads the rest.`) : null);
    },
  };
}

function tool(t) {
  const failed = t.status === "error";
  return el("details", { class: `tool${failed ? " error" : ""}`, "data-key": `tool-${t.id}` },
    el("summary", {}, el("span", { class: "tool-name" }, `Tool ${t.tool_name}`),
      ` ${failed ? "failed" : t.status}`, t.duration_ms !== null ? ` in ${num(t.duration_ms)} ms` : "",
      t.retry_count ? `, ${t.retry_count} retries` : ""),
    el("h4", {}, "Arguments"), el("pre", { class: "content" }, pretty(t.parameters)),
    t.result !== null ? [el("h4", {}, "Result"), el("pre", { class: "content" }, pretty(t.result))] : null,
    t.error ? [el("h4", {}, "Error"), el("pre", { class: "content error-text" }, t.error)] : null,
    el("p", {}, lineageLink(t.id, "tool call")));
}

function waterfall(spans) {
  const start = Math.min(...spans.map((s) => Number(s.start_ns)));
  const end = Math.max(...spans.map((s) => Number(s.end_ns)));
  const total = Math.max(1, end - start);
  const rowHeight = 22;
  const labelWidth = 260;
  const width = 900;
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${spans.length * rowHeight + 4}`,
    role: "img", "aria-label": `Spans of the session's traces (${spans.length})`, class: "waterfall" });
  spans.forEach((s, i) => {
    const x = labelWidth + ((Number(s.start_ns) - start) / total) * (width - labelWidth - 10);
    const w = Math.max(2, ((Number(s.end_ns) - Number(s.start_ns)) / total) * (width - labelWidth - 10));
    const y = i * rowHeight + 2;
    append(svg, [
      el("svg:text", { x: 4, y: y + 15, class: "span-label" }, s.name.slice(0, 36)),
      el("svg:rect", { x, y: y + 3, width: w, height: rowHeight - 8, class: `span ${s.status}` },
        el("svg:title", {}, `${s.name}: ${num(s.duration_ms, 1)} ms (${s.status})`)),
    ]);
  });
  return el("section", { "aria-labelledby": "spans" }, el("h2", { id: "spans" }, "Spans"), svg);
}

async function lineagePage(main, id) {
  const depth = params.get("depth") || "3";
  const data = await getJson(withAt(`${api}/nodes/${encodeURIComponent(id)}/lineage`, { depth }));
  document.title = `Lineage of ${describe(data.node)} · ${store}`;
  const nodes = new Map([[data.node.id, { node: data.node, level: 0 }]]);
  const edges = [];
  for (const [hops, sign] of [[data.ancestors, -1], [data.descendants, 1]]) {
    for (const hop of hops) {
      if (!nodes.has(hop.node_id)) nodes.set(hop.node_id, { node: hop.node, level: sign * hop.depth, id: hop.node_id });
      edges.push(hop.edge);
    }
  }
  const levels = new Map();
  for (const [nodeId, entry] of nodes) {
    if (!levels.has(entry.level)) levels.set(entry.level, []);
    levels.get(entry.level).push(nodeId);
  }
  const order = [...levels.keys()].sort((a, b) => a - b);
  const boxW = 200, boxH = 44, gapX = 24, gapY = 56;
  const widest = Math.max(...[...levels.values()].map((ids) => ids.length));
  const width = Math.max(1, widest) * (boxW + gapX) + gapX;
  const height = order.length * (boxH + gapY) + gapY;
  const at_ = new Map();
  order.forEach((level, row) => {
    const ids = levels.get(level);
    const offset = (width - ids.length * (boxW + gapX) + gapX) / 2;
    ids.forEach((nodeId, col) => at_.set(nodeId, { x: offset + col * (boxW + gapX), y: gapY / 2 + row * (boxH + gapY) }));
  });
  const svg = el("svg:svg", { viewBox: `0 0 ${width} ${height}`, class: "lineage", role: "group",
    "aria-label": "Lineage graph: ancestors above, descendants below" });
  for (const edge of edges) {
    const a = at_.get(edge.from_id), b = at_.get(edge.to_id);
    if (!a || !b) continue;
    const [top, bottom] = a.y <= b.y ? [a, b] : [b, a];
    append(svg, el("svg:line", { x1: top.x + boxW / 2, y1: top.y + boxH, x2: bottom.x + boxW / 2, y2: bottom.y, class: "edge" }),
      el("svg:text", { x: (top.x + bottom.x + boxW) / 2 + 4, y: (top.y + boxH + bottom.y) / 2 + 4, class: "edge-label" }, edge.edge_type));
  }
  for (const [nodeId, entry] of nodes) {
    const p = at_.get(nodeId);
    const label = describe(entry.node);
    const box = el("svg:g", { class: `node ${entry.node ? entry.node.node_type : "missing"}${entry.level === 0 ? " start" : ""}` },
      el("svg:rect", { x: p.x, y: p.y, width: boxW, height: boxH, rx: 6 }),
      el("svg:text", { x: p.x + 8, y: p.y + 18 }, (entry.node ? entry.node.node_type || "node" : "node")),
      el("svg:text", { x: p.x + 8, y: p.y + 35, class: "node-text" }, label.replace(/^[a-z_]+:? /, "").slice(0, 28)));
    append(svg, entry.level === 0 ? box : el("svg:a", { href: withAt(ui("lineage", nodeId)), "aria-label": `Lineage of ${label}` }, box));
  }
  const list = (title, hops) => el("section", {}, el("h2", {}, title), hops.length ? el("ol", {}, hops.map((hop) =>
    el("li", {}, `${hop.edge.edge_type} (depth ${hop.depth}): `, link(ui("lineage", hop.node_id), describe(hop.node)),
      hop.node && hop.node.session_id ? [" in ", link(ui("sessions", hop.node.session_id), "its session")] : null))) : el("p", {}, "None."));
  const self = data.node;
  replace(main,
    el("h1", {}, `Lineage of ${describe(self)}`),
    el("p", {}, el("code", {}, self.id), self.session_id ? [" · ", link(ui("sessions", self.session_id), "open its session")] : null,
      " · depth ", [1, 3, 5].map((d) => [" ", d === Number(depth) ? el("strong", {}, d) : link(`?depth=${d}`, d)])),
    self.content !== undefined ? content(self.content, "Content") : null,
    el("div", { class: "scroll" }, svg),
    list("Ancestors", data.ancestors), list("Descendants", data.descendants));
}

function sparkline(values, label) {
  const w = 120, h = 28;
  const max = Math.max(1, ...values);
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * w},${h - (v / max) * (h - 2) - 1}`).join(" ");
  return el("svg:svg", { viewBox: `0 0 ${w} ${h}`, width: w, height: h, role: "img", class: "spark",
    "aria-label": `${label}: ${values.map((v) => num(v)).join(", ")}` },
  el("svg:polyline", { points: values.length > 1 ? points : `0,${h / 2} ${w},${h / 2}` }));
}

async function agentsPage(main) {
  document.title = `Agents · ${store}`;
  const data = await getJson(withAt(`${api}/agents`));
  const head = ["Agent", "Role", "Prompts", "Responses", "Handoffs in", "Handoffs out", "Tokens in",
    "Tokens out", "Mean latency (ms)", "p95 latency (ms)", "Tool calls", "Tool failures", "Last active",
    "Latency p95 over time", "Tokens over time", "Failures over time"];
  const rows = data.agents.map((a) => {
    // One point per span of time, 0 where the agent had no response in it.
    const spans = Math.max(0, ...Object.values(data.series).flat().map((s) => s.b)) + 1;
    const over = (key) => {
      const values = new Array(spans).fill(0);
      for (const s of data.series[a.agent_id] || []) values[s.b] = s[key] || 0;
      return values;
    };
    return el("tr", { class: a.tool_failures ? "failed" : null },
      el("th", { scope: "row" }, link(ui("lineage", a.agent_id), a.name)), el("td", {}, a.role),
      [a.prompts_handled, a.responses, a.handoffs_in, a.handoffs_out, a.tokens_in, a.tokens_out,
        a.mean_latency_ms, a.p95_latency_ms, a.tool_calls, a.tool_failures].map((v) => el("td", { class: "n" }, num(v))),
      el("td", {}, when(a.last_active_ts)),
      el("td", {}, sparkline(over("p95_latency_ms"), "p95 latency")),
      el("td", {}, sparkline(over("tokens"), "tokens")),
      el("td", {}, sparkline(over("failures"), "tool failures")));
  });
  replace(main, el("h1", {}, "Agents"),
    el("div", { class: "scroll" }, el("table", {}, el("caption", {}, "agent_stats, with each agent's responses over the store's time"),
      el("thead", {}, el("tr", {}, head.map((h) => el("th", { scope: "col" }, h)))), el("tbody", {}, rows))));
}

async function templatesPage(main) {
  document.title = `Templates · ${store}`;
  const data = await getJson(withAt(`${api}/templates`));
  const sections = data.templates.map((t) => {
    const versions = t.versions;
    const pick = (id, label, value) => el("span", {}, el("label", { for: id }, label),
      el("select", { id }, versions.map((v) => el("option", { value: v.version, selected: v.version === value }, `v${v.version} (${v.semver})`))));
    const oldId = `old-${t.id}`, newId = `new-${t.id}`;
    const out = el("div", { class: "diff" });
    async function show() {
      const a = Number(document.getElementById(oldId).value), b = Number(document.getElementById(newId).value);
      const diff = await getJson(withAt(`${api}/templates/${t.id}/diff`, { from: a, to: b }));
      replace(out,
        el("div", { class: "side" }, el("div", {}, el("h3", {}, `v${a}`), el("pre", { class: "content" }, diff.old.text)),
          el("div", {}, el("h3", {}, `v${b}`), el("pre", { class: "content" }, diff.new.text))),
        el("h3", {}, "Diff"),
        el("pre", { class: "content udiff" }, diff.diff.length ? diff.diff.map((line) =>
          el("span", { class: line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "" }, `${line}\n`)) : "(the same text)"));
    }
    const impact = el("p", { class: "impact" });
    if (!at) { // `template_impact` reads the present only
      getJson(`${api}/templates/${t.id}/impact`).then((i) => replace(impact,
        `Impact (with the templates that inherit from it): ${num(i.prompts.length)} prompts, `
        + `${num(i.responses.length)} responses, ${num(i.tool_invocations.length)} tool calls.`), () => {});
    }
    const last = versions[versions.length - 1].version;
    const section = el("section", { class: "template", "aria-labelledby": `t-${t.id}` },
      el("h2", { id: `t-${t.id}` }, t.name, " ", lineageLink(t.id, "template")),
      el("table", {}, el("thead", {}, el("tr", {}, ["Version", "Semver", "Recorded", "Prompts using it", "Tags"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, versions.map((v) => el("tr", {}, el("td", {}, `v${v.version}${v.is_current ? " (current)" : ""}`),
          el("td", {}, v.semver), el("td", {}, when(v.ts)), el("td", { class: "n" }, num(v.prompts)), el("td", {}, (v.tags || []).join(", ")))))),
      impact,
      el("form", { class: "compare", onchange: show, onsubmit: (e) => { e.preventDefault(); show(); } },
        pick(oldId, "Compare ", Math.max(1, last - 1)), pick(newId, " with ", last)),
      out);
    queueMicrotask(show);
    return section;
  });
  replace(main, el("h1", {}, "Templates"), sections.length ? sections : el("p", {}, "No templates."));
}

// A text cell beginning with =, +, -, @, a tab or a carriage return is written with a ' before
// it: stored text is anyone's (users' prompts), and a spreadsheet opening the file would run
// it as a formula (CSV injection). Numbers are written as they are, and so is a text that is
// a number and nothing else (a Decimal's "-1.50", "-Infinity").
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^-Infinity$/;
function csv(columns, rows) {
  const cell = (v) => {
    let text = v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v);
    if (typeof v === "string" && /^[=+\-@\t\r]/.test(text) && !NUMBER.test(text)) text = `'${text}`;
    return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
  };
  return [columns, ...rows].map((row) => row.map(cell).join(",")).join("\r\n") + "\r\n";
}

async function sqlPage(main) {
  document.title = `SQL · ${store}`;
  const text = el("textarea", { id: "query", rows: 6, spellcheck: "false" },
    params.get("query") || "SELECT name, prompts_handled, tool_failures FROM agent_stats");
  const out = el("div", { class: "results", "aria-live": "polite" });
  async function run(event) {
    if (event) event.preventDefault();
    replace(out, el("p", {}, "Running…"));
    try {
      const result = await getJson(`${api}/sql`, { method: "POST", headers: headers({ "Content-Type": "application/json" }), body: jsonAt({ query: text.value }, at) });
      const blob = new Blob([csv(result.columns, result.rows)], { type: "text/csv" });
      replace(out,
        el("p", {}, `${result.rows.length} rows${result.truncated ? " (cut at the service's max_rows)" : ""} · `,
          el("a", { href: URL.createObjectURL(blob), download: "result.csv" }, "Download CSV")),
        el("div", { class: "scroll" }, el("table", { class: "sql" },
          el("thead", {}, el("tr", {}, result.columns.map((c) => el("th", { scope: "col" }, c)))),
          el("tbody", {}, result.rows.map((row) => el("tr", {}, row.map((v) => el("td", {}, pretty(v)))))))));
    } catch (error) {
      const message = error.status === 403 ? "This token may not run SQL (it needs the sql scope)." : `${error.code}: ${error.message}`;
      replace(out, el("p", { class: "error-text", role: "alert" }, message));
    }
  }
  text.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(e); });
  replace(main, el("h1", {}, "SQL"),
    el("p", {}, "Read-only SQL on this store's projections (docs/sql.md), limited in rows and time. Ctrl+Enter runs it."),
    el("form", { onsubmit: run }, el("label", { for: "query" }, "Query"), text, el("button", { type: "submit" }, "Run")),
    out);
}

async function diffPage(main) {
  const from = params.get("from") || "0", to = params.get("to") || "0";
  document.title = `Diff ${from}…${to} · ${store}`;
  const diff = await getJson(`${api}/diff?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`);
  const tables = Object.entries(diff.tables).map(([name, t]) => el("section", {},
    el("h3", {}, `${name}: ${t.added.length} added, ${t.removed.length} removed, ${t.changed.length} changed`),
    t.added.length ? el("pre", { class: "content add" }, t.added.map((r) => `+ ${JSON.stringify(r)}\n`)) : null,
    t.removed.length ? el("pre", { class: "content del" }, t.removed.map((r) => `- ${JSON.stringify(r)}\n`)) : null,
    t.changed.length ? el("pre", { class: "content" }, t.changed.map((c) => `~ ${JSON.stringify(c.before)}\n  ${JSON.stringify(c.after)}\n`)) : null));
  replace(main, el("h1", {}, `What changed from LSN ${diff.start} to ${diff.stop}`),
    el("h2", {}, "Events"), el("ol", {}, diff.events.map((e) => el("li", {}, `LSN ${e.lsn}: ${e.type}`))),
    el("h2", {}, "Tables"), tables.length ? tables : el("p", {}, "No table changed."));
}

async function main() {
  const box = document.getElementById("main");
  nav();
  try {
    const position = timebar(); // its request runs beside the page's own; live waits for it
    const [, , page, id] = path;
    if (!store) await storesPage(box);
    else if (page === "sessions" && id) await sessionPage(box, position, id);
    else if (page === "sessions" || !page) await sessionsPage(box, position);
    else if (page === "lineage" && id) await lineagePage(box, id);
    else if (page === "agents") await agentsPage(box);
    else if (page === "templates") await templatesPage(box);
    else if (page === "sql") await sqlPage(box);
    else if (page === "diff") await diffPage(box);
    else replace(box, el("h1", {}, "Not found"), el("p", {}, "No such page."));
  } catch (error) {
    if (error.status === 401) {
      signIn(box, sessionStorage.getItem(TOKEN_KEY) ? "That token was refused." : "This service needs a token.");
    } else if (error instanceof HttpError) {
      replace(box, el("h1", {}, error.status === 404 ? "Not found" : "Could not load this page"),
        el("p", { class: "error-text", role: "alert" }, `${error.code}: ${error.message}`));
    } else {
      replace(box, el("h1", {}, "Could not load this page"), el("p", { class: "error-text", role: "alert" }, String(error)));
    }
  }
}

main();
