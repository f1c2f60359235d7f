// Card preview page: loads fixture scenarios, posts a hook request to /preview/api/cards and
// renders the cards as an EHR sidebar would: patient banner, the orders, cards by severity, each
// suggestion in words, accept / dismiss with a reason posted as CDS Hooks feedback to the
// service's own feedback endpoint, and what the next call holds back and why. Card text is set with textContent; only the markdown
// `detail` goes through innerHTML, and only after renderMarkdown has escaped every character of it
// (raw HTML in a detail is shown as text, never run: cds-hooks/docs#33).
"use strict";

(function () {
  const LABELS = { info: "Info", warning: "Warning", critical: "Critical" };
  const SEVERITY = { critical: 0, warning: 1, info: 2 };
  const SUPERSCRIPT = { "0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵", "6": "⁶",
    "7": "⁷", "8": "⁸", "9": "⁹", "-": "⁻" };

  // Units as people write them: x10^9/L -> ×10⁹/L, m2 -> m², 10^3 -> 10³ (text in, text out).
  function typeset(text) {
    const sup = (digits) => digits.split("").map((c) => SUPERSCRIPT[c] || c).join("");
    return String(text == null ? "" : text)
      .replace(/(\d|\s|\()x\s?10\^(-?\d+)/g, (m, before, exp) => before + "×10" + sup(exp))
      .replace(/10\^(-?\d+)/g, (m, exp) => "10" + sup(exp))
      .replace(/\^(-?\d+)/g, (m, exp) => sup(exp))
      .replace(/(\d(?:\.\d+)?\s?)m2\b/g, "$1m²");
  }

  function escapeHtml(text) {
    return String(text)
      .replace(/&/g, "&amp;")
      .replace(/</g, "&lt;")
      .replace(/>/g, "&gt;")
      .replace(/"/g, "&quot;")
      .replace(/'/g, "&#39;");
  }

  function safeUrl(url) {
    return /^https?:\/\/[^\s]+$/i.test(url);
  }

  // Inline markdown on one escaped line: code, links (http/https only), bold, italic.
  function inline(raw) {
    const held = [];
    const hold = (html) => "\u0000" + (held.push(html) - 1) + "\u0000";
    let s = escapeHtml(raw.replace(/\u0000/g, ""));
    s = s.replace(/`([^`]+)`/g, (m, code) => hold("<code>" + code + "</code>"));
    s = s.replace(/\[([^\]]+)\]\(([^()\s]+)\)/g, (m, label, url) =>
      safeUrl(url)
        ? hold('<a href="' + url + '" target="_blank" rel="noopener noreferrer">') + label + hold("</a>")
        : label + " (" + url + ")"
    );
    s = s.replace(/\*\*(?=\S)([^*]*\S)\*\*/g, "<strong>$1</strong>");
    s = s.replace(/__(?=\S)([^_]*\S)__/g, "<strong>$1</strong>");
    s = s.replace(/(^|[^*\w])\*(?=\S)([^*]*\S)\*(?!\*)/g, "$1<em>$2</em>");
    s = s.replace(/(^|[^_\w])_(?=\S)([^_]*\S)_(?![_\w])/g, "$1<em>$2</em>");
    return s.replace(/\u0000(\d+)\u0000/g, (m, i) => held[Number(i)]);
  }

  // A small, safe subset of GitHub-flavoured markdown: paragraphs, headings, lists, inline marks.
  function renderMarkdown(text) {
    const out = [];
    let paragraph = [];
    let list = null; // {tag, items}
    const flushParagraph = () => {
      if (paragraph.length) out.push("<p>" + paragraph.map(inline).join("<br>") + "</p>");
      paragraph = [];
    };
    const flushList = () => {
      if (list) out.push("<" + list.tag + ">" + list.items.map((i) => "<li>" + inline(i) + "</li>").join("") + "</" + list.tag + ">");
      list = null;
    };
    for (const line of String(text || "").split(/\r?\n/)) {
      const heading = /^\s{0,3}(#{1,6})\s+(.*)$/.exec(line);
      const bullet = /^\s{0,3}[-*+]\s+(.*)$/.exec(line);
      const numbered = /^\s{0,3}\d{1,9}[.)]\s+(.*)$/.exec(line);
      if (!line.trim()) {
        flushParagraph();
        flushList();
      } else if (heading) {
        flushParagraph();
        flushList();
        out.push("<h4>" + inline(heading[2]) + "</h4>");
      } else if (bullet || numbered) {
        flushParagraph();
        const tag = bullet ? "ul" : "ol";
        if (list && list.tag !== tag) flushList();
        if (!list) list = { tag: tag, items: [] };
        list.items.push((bullet || numbered)[1]);
      } else if (list && /^\s{2,}\S/.test(line)) {
        list.items[list.items.length - 1] += " " + line.trim(); // a wrapped list item
      } else {
        flushList();
        paragraph.push(line.trim());
      }
    }
    flushParagraph();
    flushList();
    return out.join("\n");
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function asList(value) {
    return Array.isArray(value) ? value : value == null ? [] : [value];
  }

  // ---- FHIR in words ------------------------------------------------------------------------

  const TIMES = { 1: "once", 2: "twice", 3: "three times", 4: "four times", 5: "five times", 6: "six times" };
  const UNITS = { s: "second", min: "minute", h: "hour", d: "day", wk: "week", mo: "month", a: "year" };

  function plural(n, word) {
    return n + " " + word + (Number(n) === 1 ? "" : "s");
  }

  function quantity(q) {
    if (!q || q.value == null) return "";
    return q.value + " " + (q.unit || q.code || "");
  }

  function medicationName(resource) {
    const concept = resource.medicationCodeableConcept || {};
    const coding = asList(concept.coding)[0] || {};
    const ref = resource.medicationReference || {};
    return concept.text || coding.display || ref.display || ref.reference || resource.resourceType;
  }

  // One dosageInstruction as "17.5 mg three times a day for 7 days".
  function dosageStep(d) {
    const parts = [];
    const rate = asList(d.doseAndRate)[0] || {};
    if (rate.doseQuantity) parts.push(quantity(rate.doseQuantity).trim());
    else if (rate.doseRange) parts.push(quantity(rate.doseRange.low).trim() + " to " + quantity(rate.doseRange.high).trim());
    if (rate.rateQuantity) parts.push("at " + quantity(rate.rateQuantity).trim());
    const repeat = ((d.timing || {}).repeat) || {};
    const unit = UNITS[repeat.periodUnit] || repeat.periodUnit;
    if (repeat.frequency && repeat.period && unit) {
      if (Number(repeat.period) === 1) parts.push((TIMES[repeat.frequency] || repeat.frequency + " times") + " a " + unit);
      else if (Number(repeat.frequency) === 1) parts.push("every " + plural(repeat.period, unit));
      else parts.push(repeat.frequency + " times every " + plural(repeat.period, unit));
    }
    if (repeat.boundsDuration && repeat.boundsDuration.value != null) {
      const bound = repeat.boundsDuration;
      const word = UNITS[bound.code] || String(bound.unit || "").replace(/s$/, "");
      parts.push("for " + plural(bound.value, word));
    }
    if (d.asNeededBoolean) parts.push("as needed");
    const route = ((d.route || {}).text) || ((asList((d.route || {}).coding)[0] || {}).display);
    if (route && !parts.length) parts.push(route);
    return parts.length ? parts.join(" ") : (d.text || "");
  }

  function dosage(resource) {
    const steps = asList(resource.dosageInstruction).slice().sort((a, b) => (a.sequence || 0) - (b.sequence || 0));
    return steps.map(dosageStep).filter(Boolean).join(", then ");
  }

  function orderWords(resource) {
    if (!resource) return "";
    if (resource.resourceType === "MedicationRequest") {
      const how = dosage(resource);
      return medicationName(resource) + (how ? ", " + how : "");
    }
    const code = resource.code || {};
    return code.text || ((asList(code.coding)[0] || {}).display) || resource.resourceType;
  }

  function draftsOf(request) {
    const context = (request && request.context) || {};
    const bundle = context.draftOrders || context.medications || {};
    return asList(bundle.entry).map((e) => e && e.resource).filter(Boolean);
  }

  // What a suggestion's action would do, for a person: "Cancel order: ...", "Replace ... with: ...".
  function actionWords(action, drafts) {
    const byRef = (ref) => drafts.find((r) => ref && r.resourceType + "/" + r.id === ref);
    const resource = action.resource || {};
    const ref = action.resourceId || (resource.resourceType && resource.id ? resource.resourceType + "/" + resource.id : "");
    const target = byRef(ref);
    const named = target ? medicationName(target) + " (" + ref + ")" : ref;
    if (action.type === "delete") return "Cancel order " + (named || "(unnamed)");
    if (action.type === "update") return "Replace " + (named || "the order") + " with: " + (dosage(resource) || orderWords(resource));
    if (action.type === "create") return "New order: " + orderWords(resource);
    return action.description || action.type;
  }

  function patientOf(request) {
    const prefetch = (request && request.prefetch) || {};
    const patient = prefetch.patient;
    return patient && patient.resourceType === "Patient" ? patient : null;
  }

  function ageOn(birthDate, now) {
    const born = new Date(birthDate);
    if (isNaN(born)) return null;
    let age = now.getUTCFullYear() - born.getUTCFullYear();
    const month = now.getUTCMonth() - born.getUTCMonth();
    if (month < 0 || (month === 0 && now.getUTCDate() < born.getUTCDate())) age -= 1;
    return age;
  }

  function renderBanner(request, asOf) {
    const banner = document.getElementById("banner");
    const context = (request && request.context) || {};
    const patient = patientOf(request);
    banner.replaceChildren();
    if (!patient && !context.patientId) return (banner.hidden = true);
    const name = patient && asList(patient.name)[0];
    const text = name ? (name.text || [asList(name.given).join(" "), name.family].filter(Boolean).join(" ")) : "";
    banner.append(el("span", "patient-name", text || "Patient " + context.patientId));
    const facts = [];
    if (patient && patient.birthDate) {
      const now = asOf ? new Date(asOf) : new Date();
      const age = ageOn(patient.birthDate, isNaN(now) ? new Date() : now);
      if (age !== null) facts.push(age + " y");
    }
    if (patient && patient.gender) facts.push(patient.gender);
    if (patient && patient.birthDate) facts.push("born " + patient.birthDate);
    facts.push("id " + (context.patientId || patient.id));
    banner.append(el("span", "patient-facts", facts.join(" · ")));
    banner.hidden = false;
  }

  function renderOrders(request) {
    const box = document.getElementById("orders");
    const drafts = draftsOf(request);
    const selections = asList(((request && request.context) || {}).selections);
    box.replaceChildren();
    if (!drafts.length) return (box.hidden = true);
    box.append(el("h2", null, (request.hook || "Orders") + ": " + plural(drafts.length, "order")));
    const list = el("ul", "order-list");
    for (const order of drafts) {
      const ref = order.resourceType + "/" + order.id;
      const item = el("li", "order" + (selections.includes(ref) ? " selected" : ""));
      item.append(el("span", "order-status", order.status || ""), el("span", "order-what", typeset(orderWords(order))));
      if (selections.includes(ref)) item.append(el("span", "order-flag", "selected"));
      list.append(item);
    }
    box.append(list);
    box.hidden = false;
  }

  // ---- cards ----------------------------------------------------------------------------------

  let lastCall = null; // {request, service, now} of the last call, for feedback and the next call

  function bySeverity(cards) {
    return cards
      .map((card, i) => [card, i])
      .sort((a, b) => ((SEVERITY[a[0].indicator] ?? 3) - (SEVERITY[b[0].indicator] ?? 3)) || a[1] - b[1])
      .map((pair) => pair[0]);
  }

  function renderCard(card, drafts) {
    const indicator = LABELS[card.indicator] ? card.indicator : "info";
    const node = el("article", "card card-" + indicator);
    node.dataset.indicator = String(card.indicator);
    if (card.uuid) node.dataset.uuid = String(card.uuid);

    const head = el("div", "card-head");
    head.append(el("span", "indicator", LABELS[indicator]), el("h3", "summary", typeset(card.summary)));
    node.append(head);

    // The label names the rules and their version: plain text, never a link to somewhere else.
    const source = card.source || {};
    const sourceLine = el("div", "source", "Source: " + (source.label || "(no source label)"));
    if (source.topic && (source.topic.display || source.topic.code)) {
      sourceLine.append(document.createTextNode(" · " + (source.topic.display || source.topic.code)));
    }
    if (source.url && safeUrl(source.url)) {
      const a = el("a", "reference", "reference (" + new URL(source.url).hostname + ")");
      a.href = source.url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      sourceLine.append(document.createTextNode(" · "), a);
    }
    node.append(sourceLine);

    if (card.detail) {
      const detail = el("div", "detail");
      detail.innerHTML = renderMarkdown(typeset(card.detail));
      node.append(detail);
    }

    if (Array.isArray(card.suggestions) && card.suggestions.length) {
      const box = el("div", "suggestions");
      for (const suggestion of card.suggestions) {
        const row = el("div", "suggestion-row");
        const button = el("button", "suggestion" + (suggestion.isRecommended ? " recommended" : ""),
          "Accept: " + typeset(suggestion.label) + (suggestion.isRecommended ? " (recommended)" : ""));
        button.type = "button";
        if (suggestion.uuid) button.dataset.uuid = String(suggestion.uuid);
        button.addEventListener("click", () => accept(node, card, suggestion));
        const actions = el("ul", "actions");
        for (const action of asList(suggestion.actions)) {
          const words = el("li", "action", typeset(actionWords(action, drafts || [])));
          words.title = action.description || "";
          actions.append(words);
        }
        row.append(button, actions);
        box.append(row);
      }
      node.append(box);
    }

    if (Array.isArray(card.links) && card.links.length) {
      const links = el("ul", "links");
      for (const link of card.links) {
        const item = el("li");
        if (link.type === "absolute" && safeUrl(link.url || "")) {
          const a = el("a", null, link.label);
          a.href = link.url;
          a.target = "_blank";
          a.rel = "noopener noreferrer";
          item.append(a);
        } else {
          item.textContent = link.label + (link.type === "smart" ? " (SMART app)" : "");
        }
        links.append(item);
      }
      node.append(links);
    }

    const dismiss = el("div", "override");
    const reasons = el("select", "override-reasons");
    reasons.setAttribute("aria-label", "Reason for dismissing");
    reasons.append(el("option", null, "(choose a reason)"));
    reasons.firstChild.value = "";
    asList(card.overrideReasons).forEach((reason, i) => {
      const option = el("option", null, reason.display || reason.code);
      option.value = String(i);
      reasons.append(option);
    });
    const comment = el("input", "override-comment");
    comment.type = "text";
    comment.placeholder = "comment (optional)";
    comment.setAttribute("aria-label", "Comment");
    const button = el("button", "dismiss", "Dismiss");
    button.type = "button";
    button.addEventListener("click", () => {
      const chosen = reasons.value === "" ? null : asList(card.overrideReasons)[Number(reasons.value)];
      dismissCard(node, card, chosen, comment.value.trim());
    });
    if (!asList(card.overrideReasons).length) reasons.hidden = true;
    dismiss.append(reasons, comment, button);
    node.append(dismiss);
    node.append(el("div", "outcome"));
    return node;
  }

  function renderCards(container, cards, drafts) {
    container.replaceChildren(...bySeverity(cards).map((card) => renderCard(card, drafts)));
    if (!cards.length) container.append(el("p", "muted no-cards", "No cards: the service has nothing to say about this request."));
  }

  function renderHeldBack(held) {
    const box = document.getElementById("held-back");
    const list = box.querySelector(".held-list");
    list.replaceChildren();
    box.hidden = !held.length;
    box.open = false;
    box.querySelector("summary").textContent = plural(held.length, "card") + " not shown (why)";
    for (const item of held) {
      const card = item.card || {};
      const li = el("li", "held card-" + (LABELS[card.indicator] ? card.indicator : "info"));
      li.dataset.why = String(item.why || "");
      li.append(el("span", "indicator", LABELS[card.indicator] || "Info"), el("strong", "summary", typeset(card.summary)));
      li.append(el("p", "because", item.because || item.why));
      list.append(li);
    }
  }

  // ---- feedback and the next call -----------------------------------------------------------

  async function sendFeedback(node, entry, done) {
    const outcome = node.querySelector(".outcome");
    if (!lastCall) return;
    node.querySelectorAll("button, select, input").forEach((n) => (n.disabled = true));
    const { ok, status, body } = await getJson("/cds-services/" + encodeURIComponent(lastCall.service) + "/feedback", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ feedback: [{ ...entry, outcomeTimestamp: new Date().toISOString() }] }),
    });
    if (!ok) {
      node.querySelectorAll("button, select, input").forEach((n) => (n.disabled = false));
      outcome.className = "outcome error";
      outcome.textContent = "Feedback not taken: HTTP " + status + " " + (body.message || body.error || "");
      return;
    }
    node.classList.add("card-done");
    outcome.className = "outcome done";
    outcome.textContent = done + " (feedback sent" + (lastCall.recorded ? "" : "; this call was not recorded, so the service does not know the card") + ")";
    document.body.dataset.feedback = String(Number(document.body.dataset.feedback || 0) + 1);
    await showNext();
  }

  function accept(node, card, suggestion) {
    return sendFeedback(node, { card: card.uuid, outcome: "accepted", acceptedSuggestions: [{ id: suggestion.uuid }] },
      "Accepted: " + typeset(suggestion.label));
  }

  function dismissCard(node, card, reason, comment) {
    const entry = { card: card.uuid, outcome: "overridden" };
    const override = {};
    if (reason) override.reason = { code: reason.code, system: reason.system, display: reason.display };
    if (comment) override.userComment = comment;
    if (reason || comment) entry.overrideReason = override;
    const why = reason ? (reason.display || reason.code) : comment ? "“" + comment + "”" : "no reason given";
    return sendFeedback(node, entry, "Dismissed: " + why);
  }

  async function showNext() {
    const box = document.getElementById("next");
    if (!lastCall || !lastCall.recorded) return (box.hidden = true);
    const { ok, body } = await getJson("/preview/api/next", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ request: lastCall.request, service: lastCall.service, now: lastCall.now }),
    });
    box.replaceChildren();
    box.hidden = false;
    if (!ok) return box.append(el("p", "error", "Could not ask what the next call holds back: " + (body.message || body.error)));
    const held = body.held_back || [];
    box.append(el("h2", null, held.length ? "The next call would not show " + plural(held.length, "card") : "The next call would show every card again"));
    const list = el("ul", "next-list");
    for (const item of held) {
      const li = el("li", "next-item");
      li.dataset.rule = String(item.rule || "");
      li.append(el("strong", null, typeset(item.summary)), el("p", "because", item.because));
      list.append(li);
    }
    box.append(list);
    document.body.dataset.next = String(held.length);
  }

  // ---- the page ---------------------------------------------------------------------------------

  function showExpected(expected, cards) {
    const box = document.getElementById("expected");
    if (!expected || !Array.isArray(expected.cards)) {
      box.hidden = true;
      return;
    }
    const key = (rule, indicator) => rule + " " + indicator;
    const want = expected.cards.map((c) => key(c.rule, c.indicator)).sort();
    const got = cards
      .filter((c) => c.source && c.source.topic)
      .map((c) => key(c.source.topic.code, c.indicator))
      .sort();
    const same = JSON.stringify(want) === JSON.stringify(got);
    box.hidden = false;
    box.className = "expected" + (same ? "" : " mismatch");
    box.textContent = "Fixture expects: " + (want.length ? want.join(", ") : "no cards") +
      (same ? " (matches)" : " (differs from what the service returned)");
  }

  let current = null; // the loaded scenario

  async function getJson(url, options) {
    const response = await fetch(url, options);
    const body = await response.json().catch(() => ({ error: "not_json", message: response.statusText }));
    return { ok: response.ok, status: response.status, body: body };
  }

  async function loadScenarios() {
    const { ok, body } = await getJson("/preview/api/scenarios", { headers: { Accept: "application/json" } });
    const select = document.getElementById("scenario");
    select.replaceChildren(el("option", null, ok && body.scenarios.length ? "(choose a scenario)" : "(no scenarios found)"));
    select.firstChild.value = "";
    if (!ok) return;
    for (const scenario of body.scenarios) {
      const option = el("option", null, scenario.name + (scenario.hook ? "  [" + scenario.hook + "]" : ""));
      option.value = scenario.name;
      option.title = scenario.description || "";
      select.append(option);
    }
    const services = document.getElementById("service");
    for (const service of body.services) {
      const option = el("option", null, service.id + " (" + service.hook + ")");
      option.value = service.id;
      services.append(option);
    }
    if (!body.suppression) {
      const record = document.getElementById("record");
      record.checked = false;
      record.disabled = true;
    }
    document.body.dataset.ready = "true";
  }

  async function loadScenario(name) {
    current = null;
    document.getElementById("scenario-description").textContent = "";
    if (!name) return;
    const { ok, body } = await getJson("/preview/api/scenarios/" + encodeURIComponent(name), { headers: { Accept: "application/json" } });
    if (!ok) return setStatus("Could not load " + name + ": " + (body.message || body.error), true);
    current = body;
    document.getElementById("request").value = JSON.stringify(body.request, null, 2);
    document.getElementById("now").value = (body.expected && body.expected.now) || "";
    document.getElementById("scenario-description").textContent = (body.expected && body.expected.description) || "";
    await run();
  }

  function setStatus(text, error) {
    const status = document.getElementById("status");
    status.textContent = text;
    status.className = error ? "error" : "muted";
  }

  function freshInstance() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "preview-" + Date.now() + "-" + Math.random().toString(16).slice(2);
  }

  async function run() {
    let request;
    try {
      request = JSON.parse(document.getElementById("request").value);
    } catch (error) {
      return setStatus("The request is not valid JSON: " + error.message, true);
    }
    const scenarioRequest = current && JSON.stringify(current.request) === JSON.stringify(request);
    const record = document.getElementById("record").checked;
    if (record && request && typeof request === "object") request = { ...request, hookInstance: freshInstance() };
    const now = document.getElementById("now").value.trim() || undefined;
    renderBanner(request, now);
    renderOrders(request);
    setStatus("Calling the service…");
    const { ok, status, body } = await getJson("/preview/api/cards", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        request: request,
        service: document.getElementById("service").value || undefined,
        now: now,
        record: record,
      }),
    });
    document.getElementById("raw-response").textContent = JSON.stringify(body, null, 2);
    const cards = document.getElementById("cards");
    if (!ok) {
      cards.replaceChildren();
      renderHeldBack([]);
      document.getElementById("next").hidden = true;
      document.getElementById("expected").hidden = true;
      const problems = (body.problems || []).map((p) => p.path + ": " + p.message).join("; ");
      return setStatus("HTTP " + status + " " + (body.error || "") + ": " + (body.message || "") + (problems ? " (" + problems + ")" : ""), true);
    }
    lastCall = { request: request, service: body.service, now: now, recorded: body.recorded };
    renderCards(cards, body.cards || [], draftsOf(request));
    renderHeldBack(body.held_back || []);
    const all = (body.cards || []).concat((body.held_back || []).map((h) => h.card));
    showExpected(scenarioRequest || (current && JSON.stringify({ ...current.request, hookInstance: request.hookInstance }) === JSON.stringify(request)) ? current.expected : null, all);
    const sources = Object.entries(body.sources || {}).map(([k, v]) => k + "=" + v).join(", ");
    const held = (body.held_back || []).length;
    setStatus(plural((body.cards || []).length, "card") + (held ? " shown, " + held + " held back" : "") + " from " + body.service + " as of " + body.now +
      (body.recorded ? " (recorded)" : " (not recorded)") + (sources ? "; data: " + sources : ""));
    document.getElementById("next").hidden = true;
    document.body.dataset.evaluated = String(Number(document.body.dataset.evaluated || 0) + 1);
  }

  window.cdsPreview = {
    renderMarkdown: renderMarkdown,
    renderCards: renderCards,
    escapeHtml: escapeHtml,
    typeset: typeset,
    dosage: dosage,
    actionWords: actionWords,
  };

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("scenario").addEventListener("change", (e) => loadScenario(e.target.value));
    document.getElementById("run").addEventListener("click", () => run());
    loadScenarios().catch((error) => setStatus("Could not list scenarios: " + error.message, true));
  });
})();
