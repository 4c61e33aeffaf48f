// ddb-audit's web page: sign in, search, read an item's timeline.
// No framework and no inline code (the CSP forbids it); data only ever goes
// into the page as text (textContent), never as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "ddb-audit-token";
  // Entries per API call. A page is shown when the reader scrolls near the
  // end (or presses "Load more"), the one after it fetched meanwhile, so a
  // long history is on screen as fast as a short one. Pages after the first
  // are large: every call costs a round trip and a Query whatever its size,
  // and 500 entries are ~50 ms of DOM work.
  const PAGE = 500;
  // The first page only has to fill a screen, and comes back soonest.
  const FIRST_PAGE = 50;
  const LONG_VALUE = 120;

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  };

  // ---- token and API ---------------------------------------------------

  const token = {
    get: () => sessionStorage.getItem(TOKEN_KEY),
    set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
    clear: () => sessionStorage.removeItem(TOKEN_KEY),
  };

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, params, bearer) {
    const qs = params ? "?" + params.toString() : "";
    const res = await fetch(path + qs, {
      headers: { Authorization: "Bearer " + (bearer || token.get() || "") },
      credentials: "omit",
      cache: "no-store",
    });
    let body = null;
    try {
      body = await res.json();
    } catch (_) {
      body = null;
    }
    if (!res.ok) {
      if (res.status === 401 && !bearer) {
        signOut("The token was refused: sign in again.");
      }
      throw new ApiError(res.status, (body && body.error) || res.status + " " + res.statusText);
    }
    return body;
  }

  // ---- sign-in -----------------------------------------------------------

  function showSignIn(message) {
    $("app").hidden = true;
    $("who").hidden = true;
    $("signout").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    $("token").focus();
  }

  function signOut(message) {
    token.clear();
    showSignIn(message);
  }

  async function signIn(candidate) {
    const me = await api("/api/whoami", null, candidate);
    token.set(candidate);
    $("signin").hidden = true;
    $("app").hidden = false;
    $("who").hidden = false;
    $("signout").hidden = false;
    $("who").textContent = "Signed in as " + me.name + (me.scoped ? " (tables: " + me.tables.join(", ") + ")" : "");
    const list = $("tables");
    list.replaceChildren(...me.tables.map((t) => el("option", { value: t })));
    if (!$("f-table").value && me.tables.length === 1) $("f-table").value = me.tables[0];
  }

  // ---- the URL is the search ------------------------------------------

  const FILTERS = ["actor", "principal", "field", "since", "until"];

  function searchFromForm() {
    const p = new URLSearchParams();
    const table = $("f-table").value.trim();
    if (table) p.set("table", table);
    for (const id of ["f-key", "f-sort"]) {
      const k = $(id).value.trim();
      if (k) p.append("key", k);
    }
    for (const f of FILTERS) {
      const v = $("f-" + f).value.trim();
      if (v) p.set(f, v);
    }
    if ($("f-order").value === "desc") p.set("order", "desc");
    return p;
  }

  function formFromSearch(p) {
    $("f-table").value = p.get("table") || "";
    const keys = p.getAll("key");
    $("f-key").value = keys[0] || "";
    $("f-sort").value = keys[1] || "";
    let anyFilter = false;
    for (const f of FILTERS) {
      $("f-" + f).value = p.get(f) || "";
      anyFilter = anyFilter || !!p.get(f);
    }
    if (anyFilter) $("filters").open = true;
    $("f-order").value = p.get("order") === "desc" ? "desc" : "asc";
  }

  // ---- values ----------------------------------------------------------

  const TYPE_NAMES = {
    S: "string", N: "number", B: "binary", BOOL: "boolean", NULL: "null",
    M: "map", L: "list", SS: "string set", NS: "number set", BS: "binary set",
    redacted: "redacted: only a keyed commitment is stored",
  };
  const REDACTED = "\u2039redacted\u203a";

  // A value [redaction] kept out of the trail, wherever it sits in a map or list.
  function showRedacted(_, v) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      const keys = Object.keys(v);
      if (keys.length === 1 && keys[0] === "redacted") return REDACTED;
    }
    return v;
  }

  function valueText(type, v) {
    switch (type) {
      case "S": return JSON.stringify(v);
      case "N": return v;
      case "BOOL": return String(v);
      case "NULL": return "null";
      case "B": return v + " (base64)";
      case "redacted": return REDACTED;
      default: return JSON.stringify(v, showRedacted);
    }
  }

  // A typed value: its DynamoDB type, then the value; long ones collapse.
  function valueNode(value, cls) {
    if (value === undefined) return el("span", { class: "absent " + (cls || ""), text: "(none)" });
    const type = Object.keys(value)[0];
    const text = valueText(type, value[type]);
    const typeTag = el("abbr", { class: "type", title: TYPE_NAMES[type] || type, text: type });
    if (text.length <= LONG_VALUE) {
      return el("span", { class: "value " + (cls || "") }, typeTag, " ", el("code", { text }));
    }
    return el(
      "details",
      { class: "value long " + (cls || "") },
      el("summary", {}, typeTag, " ", el("code", { text: text.slice(0, 60) + "…" }), " ", el("span", { class: "help", text: "(" + text.length + " characters: show all)" })),
      el("pre", { text: JSON.stringify(value[type], showRedacted, 2) })
    );
  }

  function keyText(key) {
    return Object.entries(key || {})
      .map(([name, v]) => {
        const t = Object.keys(v)[0];
        return name + "=" + t + ":" + (t === "S" || t === "N" || t === "B" ? v[t] : JSON.stringify(v[t]));
      })
      .join(" ");
  }

  function keyParams(key) {
    const p = new URLSearchParams();
    for (const k of keyText(key).split(" ")) if (k) p.append("key", k);
    return p;
  }

  // ---- the timeline ----------------------------------------------------

  const view = {
    search: null,
    kind: null,
    next: null,
    prefetched: null,
    shown: 0,
    gaps: [],
    lastEntry: null,
    generation: 0,
    loading: false,
    started: 0,
    renderMs: 0,
    firstPageMs: null,
  };

  function cmpSeq(a, b) {
    if (a.length !== b.length) return a.length - b.length;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function gapBand(gap) {
    const span = gap.after_sequence_number
      ? "after sequence number " + gap.after_sequence_number
      : "from the start of the shard";
    const resumed = gap.resumed_at_sequence_number
      ? ", reading resumed at " + gap.resumed_at_sequence_number
      : "";
    return el(
      "li",
      { class: "gap", role: "note" },
      el("strong", { text: "History missing here" }),
      el("p", {
        text:
          "Records of shard " + gap.shard_id + " were trimmed from the stream before they could be read (" +
          span + resumed + "; detected " + gap.detected_at + "). Changes to this item in that span, if any, are not in the trail.",
      })
    );
  }

  // Gaps due before `entry` in reading order.
  function gapsBefore(entry) {
    const asc = view.search.get("order") !== "desc";
    const out = [];
    view.gaps = view.gaps.filter((g) => {
      const after = g.after_sequence_number;
      let due;
      if (asc) due = after === null || (entry.sequence_number && cmpSeq(entry.sequence_number, after) > 0);
      else due = after !== null && entry.sequence_number && cmpSeq(entry.sequence_number, after) <= 0;
      if (due) out.push(g);
      return !due;
    });
    return out;
  }

  function eventBadge(e) {
    if (e.ttl_expiry) return el("span", { class: "badge ttl", text: "TTL expiry" });
    if (e.event === "SNAPSHOT") return el("span", { class: "badge snapshot", text: "SNAPSHOT baseline" });
    return el("span", { class: "badge ev-" + e.event, text: e.event });
  }

  function changeRow(c) {
    const row = el(
      "tr",
      {},
      el("th", { scope: "row" }, el("code", { text: c.path })),
      el("td", {}, valueNode(c.old, "old")),
      el("td", { class: "arrow", "aria-label": "to" }, "→"),
      el("td", {}, valueNode(c.new, "new"))
    );
    if (c.added || c.removed) {
      const parts = [];
      if (c.added && c.added.length) parts.push("added " + c.added.join(", "));
      if (c.removed && c.removed.length) parts.push("removed " + c.removed.join(", "));
      row.lastChild.append(el("div", { class: "help", text: parts.join("; ") }));
    }
    return row;
  }

  function entryNode(e, n, showItemLink) {
    const id = "entry-" + n;
    const meta = el("dl", { class: "meta" });
    const add = (label, value) => meta.append(el("div", {}, el("dt", { text: label }), el("dd", {}, value)));
    add("Actor", e.actor || "unknown");
    if (e.last_writer) add("Last writer", e.last_writer);
    if (e.actor_source) add("Actor from", e.actor_source);
    if (e.principal) {
      const p = e.principal;
      add("IAM principal", p.arn
        ? p.arn + " (" + p.confidence + (p.source_ip ? ", from " + p.source_ip : "") + ")"
        : "ambiguous: " + (p.candidates || []).join(" or "));
    }
    add("Correlation", e.correlation || "none");
    if (showItemLink) {
      const p = new URLSearchParams({ table: e.table });
      for (const [k, v] of keyParams(e.key)) p.append(k, v);
      add("Item", el("a", { href: "/?" + p.toString(), text: e.table + " " + keyText(e.key) }));
    }
    const time = e.event_time || e.snapshot_time || "";
    const body = [];
    if (e.error) {
      body.push(el("p", { class: "error", text: "This record could not be interpreted: " + e.error }));
    }
    if (e.changes && e.changes.length) {
      body.push(
        el(
          "table",
          { class: "changes" },
          el("caption", { class: "visually-hidden", text: "Changes" }),
          el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Path" }), el("th", { scope: "col", text: "Old" }), el("th", { scope: "col" }, el("span", { class: "visually-hidden", text: "becomes" })), el("th", { scope: "col", text: "New" }))),
          el("tbody", {}, ...e.changes.map(changeRow))
        )
      );
    }
    const actions = el("div", { class: "actions" });
    if (!showItemLink && time) {
      actions.append(
        el("button", { type: "button", onclick: () => showAsOf(e), text: "Show the item as it was here" }),
        el("button", { type: "button", class: "quiet", onclick: () => showPlan(e), text: "Copy revert plan" })
      );
    }
    return el(
      "li",
      { class: "entry" + (e.ttl_expiry ? " is-ttl" : "") + (e.event === "SNAPSHOT" ? " is-snapshot" : ""), "data-seq": e.sequence_number || "" },
      el(
        "article",
        { "aria-labelledby": id },
        el("h3", { id }, el("time", { datetime: time, text: time ? time.replace("T", " ") : "time unknown" }), " ", eventBadge(e)),
        meta,
        ...body,
        actions
      )
    );
  }

  function render(entries) {
    const t0 = performance.now();
    const list = $("timeline");
    const frag = document.createDocumentFragment();
    const across = view.kind === "query-all";
    for (const e of entries) {
      if (!across) for (const g of gapsBefore(e)) frag.append(gapBand(g));
      frag.append(entryNode(e, view.shown++, across));
      view.lastEntry = e;
    }
    list.append(frag);
    // Timings the browser tests read (BENCHMARKS.md): DOM work, and when
    // the first page was on screen.
    view.renderMs += performance.now() - t0;
    if (view.firstPageMs === null) view.firstPageMs = performance.now() - view.started;
  }

  function finish() {
    if (!view.next && view.kind !== "query-all") {
      // Gaps after the last entry read.
      const frag = document.createDocumentFragment();
      for (const g of view.gaps) frag.append(gapBand(g));
      view.gaps = [];
      $("timeline").append(frag);
    }
    $("more").hidden = !view.next;
    const what = view.kind === "history" ? "entries" : "matching entries";
    $("results-summary").textContent = view.shown + " " + what + (view.next ? " shown; more below" : "") + ".";
    $("status").textContent = "";
    const b = document.body.dataset;
    b.hasMore = view.next ? "yes" : "no";
    b.totalMs = String(Math.round(performance.now() - view.started));
    b.domMs = String(Math.round(view.renderMs));
    b.firstPageMs = String(Math.round(view.firstPageMs || 0));
    b.rendered = String(view.shown);
  }

  function fetchPage(cursor, pageSize) {
    const p = new URLSearchParams(view.search);
    p.set("page_size", String(pageSize));
    if (cursor) p.set("cursor", cursor);
    return api(view.kind === "history" ? "/api/history" : "/api/query", p);
  }

  // `gaps`: a promise of the table's gaps, fetched beside the first page.
  async function loadPage(gaps) {
    const gen = view.generation;
    const pending = view.prefetched || fetchPage(view.next, view.shown ? PAGE : FIRST_PAGE);
    view.prefetched = null;
    const [page, g] = await Promise.all([pending, gaps || null]);
    if (gen !== view.generation) return;
    if (g) view.gaps = g.gaps;
    render(page.entries);
    view.next = page.next;
    finish();
    // One page ahead, fetched now and shown when the reader gets there: a
    // reader scrolling on waits for the API only when faster than it, and
    // the page holds at most one page it does not show.
    if (view.next) {
      view.prefetched = fetchPage(view.next, PAGE);
      view.prefetched.catch(() => {});
    }
  }

  async function loadMore() {
    if (view.loading || !view.next) return;
    view.loading = true;
    $("status").textContent = "Loading more…";
    try {
      await loadPage();
    } catch (err) {
      if (err.status !== 401) $("error").textContent = err.message;
    } finally {
      view.loading = false;
    }
  }

  async function runSearch(p) {
    view.generation++;
    view.search = p;
    view.next = null;
    view.prefetched = null;
    view.shown = 0;
    view.gaps = [];
    view.started = performance.now();
    view.renderMs = 0;
    view.firstPageMs = null;
    $("timeline").replaceChildren();
    $("error").textContent = "";
    $("asof").hidden = true;
    $("plan").hidden = true;
    const table = p.get("table");
    const keys = p.getAll("key");
    const filtered = FILTERS.some((f) => p.get(f));
    if (!table) return;
    if (!keys.length && !filtered) {
      $("error").textContent = "Give a Key to see one item's timeline, or a filter (actor, IAM principal, field, time) to search across items.";
      return;
    }
    view.kind = keys.length ? (filtered ? "query-item" : "history") : "query-all";
    $("results").hidden = false;
    $("results-title").textContent = keys.length
      ? "Timeline of " + table + " " + keys.join(" ")
      : "Entries in " + table + " matching " + FILTERS.filter((f) => p.get(f)).map((f) => f + " " + p.get(f)).join(", ");
    $("status").textContent = "Loading…";
    try {
      const gaps = view.kind === "query-all" ? null : api("/api/gaps", new URLSearchParams({ table }));
      await loadPage(gaps);
      $("results").focus();
    } catch (err) {
      $("status").textContent = "";
      if (err.status !== 401) $("error").textContent = err.message;
    }
  }

  // ---- as-of and revert plan ---------------------------------------------

  function itemParams(e) {
    const p = new URLSearchParams({ table: view.search.get("table") });
    for (const k of view.search.getAll("key")) p.append("key", k);
    return p;
  }

  // An entry's buttons ask the API about the page's item at the entry's time
  // (`timeParam`); `show` renders the answer. A 401 has already said so.
  async function askAtEntry(e, path, timeParam, failure, show) {
    const p = itemParams(e);
    p.set(timeParam, e.event_time);
    $("error").textContent = "";
    try {
      await show(await api(path, p));
    } catch (err) {
      if (err.status !== 401) $("error").textContent = failure + ": " + err.message;
    }
  }

  function showAsOf(e) {
    return askAtEntry(e, "/api/item", "at", "Cannot show the item as it was", (r) => {
      const rows = Object.entries(r.item || {}).map(([name, v]) =>
        el("tr", {}, el("th", { scope: "row" }, el("code", { text: name })), el("td", {}, valueNode(v)))
      );
      $("asof-table").tBodies[0].replaceChildren(...rows);
      $("asof-table").hidden = !r.exists;
      $("asof-title").textContent = "The item as it was at " + r.at;
      const notes = [];
      if (!r.exists) notes.push("The item did not exist at that time.");
      if (!r.complete) notes.push("Incomplete: the trail does not say what the item held before its first entry (no INSERT or SNAPSHOT before this time).");
      $("asof-note").textContent = notes.join(" ");
      $("asof").hidden = false;
      $("asof").focus();
    });
  }

  function showPlan(e) {
    return askAtEntry(e, "/api/revert", "to_time", "Cannot make a revert plan", async (plan) => {
      const text = JSON.stringify(plan, null, 2);
      $("plan-json").textContent = text;
      $("plan").hidden = false;
      $("plan").focus();
      try {
        await navigator.clipboard.writeText(text);
        $("status").textContent = "Revert plan copied to the clipboard.";
      } catch (_) {
        $("status").textContent = "Select the plan below to copy it (the browser refused clipboard access).";
      }
    });
  }

  // ---- verify ---------------------------------------------------------------

  const VERDICT = {
    intact: "Intact",
    tampered: "TAMPERED",
    unverifiable: "Could not be fully checked",
  };

  async function verifyTrail() {
    const table = $("f-table").value.trim();
    const p = new URLSearchParams();
    if (table) p.set("table", table);
    p.set("limit", "20");
    const out = $("verify-result");
    const list = $("verify-findings");
    const scope = table ? "the trail of " + table : "the trail of every table you may read";
    out.className = "verify";
    out.textContent = "Checking " + scope + "…";
    list.hidden = true;
    list.replaceChildren();
    $("verify").disabled = true;
    try {
      const r = await api("/api/verify", p);
      const s = r.summary;
      out.classList.add("verify-" + s.status);
      const notes = r.findings.filter((f) => f.severity === "info").length;
      out.textContent =
        (VERDICT[s.status] || s.status) + ": " + s.entries + " entries and " + s.digests + " digests in " +
        s.streams + " stream" + (s.streams === 1 ? "" : "s") + " of " + scope.replace(/^the trail of /, "") + " checked; " +
        (s.key_fingerprint
          ? "signatures checked with " + s.key_fingerprint
          : "signatures not checked (no public key configured: [proof] public_key_file)") +
        "." + (notes ? " " + notes + " note" + (notes === 1 ? "" : "s") + " (not wrong)." : "");
      const serious = r.findings.filter((f) => f.severity !== "info");
      for (const f of serious) {
        const where = f.sequence_number ? " at sequence " + f.sequence_number : f.digest !== null ? " digest " + f.digest : "";
        list.append(el("li", { class: "finding-" + f.severity },
          el("strong", { text: f.severity + ", " + f.kind.replace(/_/g, " ") }), " " + f.table + where + ": " + f.message));
      }
      if (r.findings_total > r.findings.length) {
        list.append(el("li", { text: (r.findings_total - r.findings.length) + " more: run ddb-audit verify for all of them." }));
      }
      list.hidden = !list.children.length;
      document.body.dataset.verify = s.status;
    } catch (err) {
      if (err.status !== 401) out.textContent = "Cannot verify: " + err.message;
    } finally {
      $("verify").disabled = false;
    }
  }

  // ---- wiring --------------------------------------------------------------

  function fromUrl() {
    const p = new URLSearchParams(location.search);
    formFromSearch(p);
    if (p.get("table")) runSearch(p);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("signin-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const candidate = $("token").value.trim();
      try {
        await signIn(candidate);
        $("token").value = "";
        fromUrl();
        if (!location.search) $("f-table").focus();
      } catch (err) {
        $("signin-error").textContent =
          err.status === 401 ? "That token is not accepted here." : "Cannot reach the server: " + err.message;
      }
    });
    $("signout").addEventListener("click", () => signOut("Signed out."));
    $("search").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const p = searchFromForm();
      history.pushState(null, "", "/?" + p.toString());
      runSearch(p);
    });
    $("more").addEventListener("click", loadMore);
    $("verify").addEventListener("click", verifyTrail);
    // Near the end of the list, the next page loads by itself.
    new IntersectionObserver((seen) => {
      if (seen.some((e) => e.isIntersecting)) loadMore();
    }, { rootMargin: "800px" }).observe($("more"));
    $("asof-close").addEventListener("click", () => { $("asof").hidden = true; });
    $("plan-close").addEventListener("click", () => { $("plan").hidden = true; });
    window.addEventListener("popstate", fromUrl);

    const saved = token.get();
    if (saved) {
      signIn(saved).then(fromUrl, () => signOut("Sign in again."));
    } else {
      formFromSearch(new URLSearchParams(location.search));
      showSignIn("");
    }
  });
})();
