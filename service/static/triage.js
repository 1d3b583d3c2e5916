// Outrider triage page. Every value from the server is data: it reaches the DOM only through
// textContent, never innerHTML, so a hostile entity value shows literally and cannot run.
"use strict";
(() => {
  const POLL_MS = 2000;
  const TOKEN_KEY = "outrider.triage.token";
  const ANALYST_KEY = "outrider.triage.analyst";
  const LOCAL_MS = 15000; // how long a sent verdict shows before the server's view wins
  const VERDICTS = {
    true_positive: "Malicious",
    benign_positive: "Benign",
    false_positive: "False positive",
    duplicate: "Duplicate",
    undetermined: "Undone",
    other: "Other",
  };
  const $ = (id) => document.getElementById(id);
  const sent = new Map(); // group_id -> {verdict, at}: shown until the server reports it
  let token = null;
  let timer = null;
  let lastKey = "";
  let lastVersion = null;
  let busy = false;

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function takeToken() {
    const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search); // off the URL bar
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function askToken(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    token = null;
    clearTimeout(timer);
    $("board").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  async function api(path, body) {
    const headers = { Authorization: "Bearer " + token };
    const analyst = $("analyst").value.trim();
    if (analyst) headers["X-Analyst"] = encodeURIComponent(analyst);
    const init = { headers, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const res = await fetch(path, init);
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    if (res.status === 401) {
      askToken("The token was refused; paste the current one.");
      throw new Error("token refused");
    }
    if (!res.ok) throw new Error((data && data.error) || "HTTP " + res.status);
    return data;
  }

  function utc(seconds) {
    if (typeof seconds !== "number" || !isFinite(seconds)) return "?";
    return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function seen(g) {
    const a = utc(g.first_seen);
    const b = utc(g.last_seen);
    if (a === b) return a;
    return a.slice(0, 10) === b.slice(0, 10) ? a + " – " + b.slice(11) : a + " – " + b;
  }

  function shownVerdict(g) {
    const mine = sent.get(g.group_id);
    if (mine && (g.verdict === mine.verdict || Date.now() - mine.at > LOCAL_MS)) {
      sent.delete(g.group_id);
    } else if (mine) {
      return { verdict: mine.verdict, pending: true };
    }
    return { verdict: g.verdict, pending: false };
  }

  function row(g) {
    const tr = el("tr");
    tr.dataset.groupId = g.group_id;
    const v = shownVerdict(g);
    if (v.verdict) tr.classList.add("v-" + v.verdict);

    tr.append(el("td", "num rank", g.rank));

    const sev = el("td");
    sev.append(el("span", "sev sev-" + g.severity, g.severity));
    if (typeof g.percentile === "number") {
      sev.append(el("span", "pct", "p" + g.percentile.toFixed(2)));
    }
    tr.append(sev, el("td", "kind", g.kind));

    const pattern = el("td", "pattern");
    for (const [k, val] of Object.entries(g.entities || {})) {
      const chip = el("span", "entity");
      chip.append(el("span", "k", k), el("span", "v", val));
      pattern.append(chip);
    }
    const why = el("td", "why", g.why);
    if (g.verdict_note) why.append(el("div", "verdict-note", g.verdict_note));
    tr.append(pattern, why, el("td", "num", g.count), el("td", "seen", seen(g)));

    const vtd = el("td", "verdict", v.verdict ? VERDICTS[v.verdict] || v.verdict : "—");
    if (v.pending) vtd.append(el("span", "pending", " (sent)"));
    if (g.ask && !v.verdict) {
      const ask = el("span", "ask", "model asks");
      ask.title = "A verdict on this group would teach the model most";
      vtd.append(ask);
    }
    tr.append(vtd);

    const actions = el("td", "actions");
    const buttons = [
      ["Malicious", "true_positive", "bad"],
      ["Benign", "benign_positive", "good"],
      ["Undo", null, "undo"],
    ].map(([label, verdict, cls]) => {
      const b = el("button", "btn " + cls, label);
      b.type = "button";
      b.dataset.verdict = verdict || "undo";
      if (verdict) {
        b.classList.toggle("active", v.verdict === verdict);
        b.setAttribute("aria-pressed", String(v.verdict === verdict));
      }
      b.title = verdict ? "Mark this group " + label.toLowerCase() : "Retract the verdict";
      b.addEventListener("click", () => mark(g, verdict, buttons));
      return b;
    });
    actions.append(...buttons);
    tr.append(actions);
    return tr;
  }

  async function mark(g, verdict, buttons) {
    buttons.forEach((b) => (b.disabled = true));
    try {
      if (verdict) {
        await api("/api/verdict", { target_id: g.group_id, verdict });
      } else {
        await api("/api/undo", { target_id: g.group_id });
      }
      sent.set(g.group_id, { verdict: verdict || "undetermined", at: Date.now() });
      toast("#" + g.rank + " " + g.kind + ": " + (verdict ? VERDICTS[verdict] : "verdict undone"));
      lastKey = "";
      poll();
    } catch (e) {
      toast("Not recorded: " + e.message, true);
      buttons.forEach((b) => (b.disabled = false));
    }
  }

  let toastTimer = null;
  function toast(text, error) {
    const t = $("toast");
    t.textContent = text;
    t.classList.toggle("error", !!error);
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => (t.hidden = true), 6000);
  }

  function render(groups) {
    const frag = document.createDocumentFragment();
    groups.forEach((g) => frag.append(row(g)));
    $("rows").replaceChildren(frag);
    $("empty").hidden = groups.length > 0;
    $("count").textContent = groups.length + (groups.length === 1 ? " group" : " groups");
  }

  function setKinds(kinds) {
    const sel = $("kind");
    const keep = sel.value;
    const have = Array.from(sel.options).slice(1).map((o) => o.value);
    if (JSON.stringify(have) === JSON.stringify(kinds)) return;
    const opts = [new Option("all kinds", "")].concat(kinds.map((k) => new Option(k, k)));
    sel.replaceChildren(...opts);
    sel.value = kinds.includes(keep) ? keep : "";
  }

  function setModel(version) {
    const m = $("model");
    m.textContent = "model " + (version === null || version === undefined ? "—" : version);
    if (lastVersion !== null && version !== lastVersion) {
      m.classList.add("changed");
      setTimeout(() => m.classList.remove("changed"), 4000);
    }
    lastVersion = version;
  }

  async function poll() {
    clearTimeout(timer);
    if (!token) return;
    if (busy) {
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    busy = true;
    try {
      const q = new URLSearchParams();
      if ($("kind").value) q.set("kind", $("kind").value);
      if ($("severity").value) q.set("severity", $("severity").value);
      const [groups, kinds, model] = await Promise.all([
        api("/api/groups?" + q),
        api("/api/kinds"),
        api("/api/model"),
      ]);
      setKinds(kinds);
      setModel(model.version);
      const key = JSON.stringify(groups) + JSON.stringify([...sent.entries()]);
      if (key !== lastKey) render(groups); // untouched DOM keeps a half-done click alive
      lastKey = key;
      status("live · " + new Date().toLocaleTimeString(), false);
    } catch (e) {
      if (token) status("offline: " + e.message, true);
    } finally {
      busy = false;
      if (token) timer = setTimeout(poll, POLL_MS);
    }
  }

  function status(text, bad) {
    const s = $("status");
    s.textContent = text;
    s.classList.toggle("bad", bad);
  }

  function open() {
    $("login").hidden = true;
    $("board").hidden = false;
    lastKey = "";
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("analyst").value = localStorage.getItem(ANALYST_KEY) || "";
    $("analyst").addEventListener("change", () =>
      localStorage.setItem(ANALYST_KEY, $("analyst").value.trim())
    );
    for (const id of ["kind", "severity"]) {
      $(id).addEventListener("change", () => {
        lastKey = "";
        poll();
      });
    }
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = $("token").value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      token = value;
      $("token").value = "";
      open();
    });
    token = takeToken();
    if (token) open();
    else askToken("");
  });
})();
