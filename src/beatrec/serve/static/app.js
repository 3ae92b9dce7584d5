// beatrec serve page: plain JS, no build step. Text from the model or the data is only ever set with
// textContent (never as HTML), so a title or an explanation cannot inject markup.
"use strict";

const $ = (id) => document.getElementById(id);
const basket = new Map(); // item id -> title

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function showError(msg) {
  const box = $("error");
  box.textContent = msg;
  box.hidden = !msg;
}

async function api(path, body) {
  const headers = { "Accept": "application/json" };
  const key = $("api-key").value;
  if (key) headers["X-API-Key"] = key;
  const init = { headers };
  if (body !== undefined) {
    init.method = "POST";
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({ detail: r.statusText }));
  if (!r.ok) throw new Error(`${r.status}: ${typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail)}`);
  return data;
}

function tokenChips(tokens) {
  const box = el("div", null, "tokens");
  for (const t of tokens) {
    const chip = el("span", null, "token");
    chip.appendChild(el("b", t.token));
    chip.appendChild(document.createTextNode(" "));
    chip.appendChild(el("span", t.terms.length ? t.terms.join(", ") : "(no text describes this code)", "terms"));
    chip.title = `${t.slot}: carried by ${t.carriers} (${t.source})`;
    box.appendChild(chip);
  }
  return box;
}

async function loadHealth() {
  try {
    const h = await (await fetch("/health")).json();
    $("health").textContent = `${h.dataset} · ${h.users} users · ${h.items} items · LM ${h.lm} (${h.finetune}) · model ${h.model_version}`;
    $("key-box").hidden = !h.auth;
    if (!h.auth) loadSuggestions();
  } catch (e) {
    $("health").textContent = "server unreachable";
  }
}

async function loadSuggestions() {
  try {
    const { users } = await api("/v1/users?limit=12");
    const box = $("user-suggestions");
    box.replaceChildren();
    for (const u of users) {
      const b = el("button", u);
      b.type = "button";
      b.addEventListener("click", () => { $("user-id").value = u; showUser(u); });
      box.appendChild(b);
    }
  } catch (e) { showError(e.message); }
}

async function showUser(uid) {
  showError("");
  $("attention-card").hidden = true;
  $("user-profile").textContent = "";
  let user;
  try { user = await api(`/v1/users/${encodeURIComponent(uid)}`); } catch (e) { showError(e.message); return; }
  $("user-card").hidden = false;
  $("user-card").dataset.user = String(user.id);
  $("user-title").textContent = `${user.new ? "New user" : "User"} ${user.id}`;
  $("user-meta").textContent = `${user.interactions} interactions · tokens:`;
  $("user-tokens").replaceWith(Object.assign(tokenChips(user.tokens), { id: "user-tokens" }));
  await showRecs(user.id);
}

async function showRecs(uid) {
  const list = $("recs");
  list.replaceChildren(el("li", "loading…", "muted"));
  let recs;
  try { recs = await api("/v1/recommend", { user: uid, k: Number($("k").value), explain: false }); }
  catch (e) { showError(e.message); list.replaceChildren(); return; }
  list.replaceChildren();
  for (const it of recs.items) {
    const li = el("li", null, "rec");
    li.dataset.item = String(it.item);
    li.appendChild(el("span", it.title || `item ${it.item}`, "rec-title"));
    li.appendChild(el("span", `  item ${it.item} · score ${it.score.toFixed(3)}`, "muted"));
    const ex = el("p", "explaining…", "explanation pending");
    li.appendChild(ex);
    const att = el("button", "Attention map");
    att.type = "button";
    att.addEventListener("click", () => showAttention(uid, it.item, it.title));
    li.appendChild(att);
    list.appendChild(li);
    // one request per item, sent together: the server gathers them into one batched generate call
    api("/v1/explain", { pairs: [{ user: uid, item: it.item }] })
      .then((r) => {
        ex.textContent = r.explanations[0].explanation;
        ex.className = "explanation";
        api(`/v1/items/${it.item}`).then((item) => li.insertBefore(tokenChips(item.tokens), att)).catch(() => {});
      })
      .catch((e) => { ex.textContent = `no explanation (${e.message})`; ex.className = "explanation error"; });
  }
}

async function showAttention(uid, iid, title) {
  const card = $("attention-card");
  card.hidden = false;
  $("attention-title").textContent = `Attention of the explanation of “${title || "item " + iid}” on the behavior tokens`;
  $("attention-shares").textContent = "computing…";
  const box = $("attention");
  box.replaceChildren();
  let a;
  try { a = await api(`/v1/attention?user=${encodeURIComponent(uid)}&item=${encodeURIComponent(iid)}`); }
  catch (e) { $("attention-shares").textContent = e.message; return; }
  $("attention-shares").textContent =
    `mean share per word: user tokens ${a.user_share.toFixed(3)}, item tokens ${a.item_share.toFixed(3)}`;
  const table = el("table");
  const head = el("tr");
  head.appendChild(el("th", "word"));
  for (const label of a.token_labels) head.appendChild(el("th", label));
  table.appendChild(head);
  const max = Math.max(1e-9, ...a.slot_share.flat());
  a.words.forEach((w, i) => {
    const tr = el("tr");
    tr.appendChild(el("td", w, "word"));
    a.slot_share[i].forEach((v, j) => {
      const td = el("td");
      td.style.backgroundColor = `rgba(214, 69, 31, ${(v / max).toFixed(3)})`;
      td.title = `${w} → ${a.token_labels[j]}: ${v.toFixed(4)}`;
      tr.appendChild(td);
    });
    table.appendChild(tr);
  });
  box.appendChild(table);
}

function renderBasket() {
  const ul = $("basket");
  ul.replaceChildren();
  for (const [iid, title] of basket) {
    const li = el("li");
    li.appendChild(el("span", `${title || "item " + iid} (${iid})`));
    const rm = el("button", "remove");
    rm.type = "button";
    rm.addEventListener("click", () => { basket.delete(iid); renderBasket(); });
    li.appendChild(rm);
    ul.appendChild(li);
  }
  $("create-user").disabled = basket.size === 0;
}

$("user-form").addEventListener("submit", (ev) => { ev.preventDefault(); showUser($("user-id").value); });
$("k").addEventListener("change", () => { const u = $("user-card").dataset.user; if (u) showRecs(Number(u)); });
$("show-profile").addEventListener("click", async () => {
  const u = $("user-card").dataset.user;
  $("user-profile").textContent = "writing a profile from the tokens…";
  try { $("user-profile").textContent = (await api(`/v1/users/${u}?profile=true`)).profile; }
  catch (e) { $("user-profile").textContent = e.message; }
});
$("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const ul = $("item-results");
  ul.replaceChildren();
  try {
    const { items } = await api(`/v1/items?q=${encodeURIComponent($("item-search").value)}&limit=20`);
    if (!items.length) ul.appendChild(el("li", "no item matches", "muted"));
    for (const it of items) {
      const li = el("li", null, "item-hit");
      li.appendChild(el("span", `${it.title || "item " + it.item} (${it.item})`));
      const add = el("button", "add", "add-item");
      add.type = "button";
      add.addEventListener("click", () => { basket.set(it.item, it.title); renderBasket(); });
      li.appendChild(add);
      ul.appendChild(li);
    }
  } catch (e) { showError(e.message); }
});
$("create-user").addEventListener("click", async () => {
  showError("");
  try {
    const u = await api("/v1/users", { items: [...basket.keys()] });
    basket.clear();
    renderBasket();
    $("user-id").value = u.user;
    await showUser(u.user);
  } catch (e) { showError(e.message); }
});
$("api-key").addEventListener("change", loadSuggestions);
loadHealth();
