// Card preview page: loads fixture scenarios, posts a hook request to /preview/api/cards and
// renders the cards as an EHR sidebar would. Card text is set with textContent; only the markdown
// `detail` goes through innerHTML, and only after renderMarkdown has escaped every character of it
// (raw HTML in a detail is shown as text, never run: cds-hooks/docs#33).
"use strict";

(function () {
  const LABELS = { info: "Info", warning: "Warning", critical: "Critical" };

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

  function renderCard(card) {
    const indicator = LABELS[card.indicator] ? card.indicator : "info";
    const node = el("article", "card card-" + indicator);
    node.dataset.indicator = String(card.indicator);
    if (card.uuid) node.dataset.uuid = String(card.uuid);

    const head = el("div", "card-head");
    head.append(el("span", "indicator", LABELS[indicator]), el("h3", "summary", card.summary));
    node.append(head);

    const source = card.source || {};
    const sourceLine = el("div", "source", "Source: ");
    if (source.url && safeUrl(source.url)) {
      const a = el("a", null, source.label);
      a.href = source.url;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      sourceLine.append(a);
    } else {
      sourceLine.append(document.createTextNode(source.label || "(no source label)"));
    }
    if (source.topic && (source.topic.display || source.topic.code)) {
      sourceLine.append(document.createTextNode(" · " + (source.topic.display || source.topic.code)));
    }
    node.append(sourceLine);

    if (card.detail) {
      const detail = el("div", "detail");
      detail.innerHTML = renderMarkdown(card.detail);
      node.append(detail);
    }

    if (Array.isArray(card.suggestions) && card.suggestions.length) {
      const box = el("div", "suggestions");
      for (const suggestion of card.suggestions) {
        const button = el("button", "suggestion" + (suggestion.isRecommended ? " recommended" : ""),
          suggestion.label + (suggestion.isRecommended ? " (recommended)" : ""));
        button.type = "button";
        button.disabled = true; // read-only preview: suggestions are shown, never applied
        button.title = (suggestion.actions || []).map((a) => a.type + ": " + a.description).join("\n");
        box.append(button);
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

    if (Array.isArray(card.overrideReasons) && card.overrideReasons.length) {
      const box = el("div", "override");
      const label = el("label", null, "Dismiss with reason");
      const select = el("select", "override-reasons");
      select.append(el("option", null, "(choose a reason)"));
      for (const reason of card.overrideReasons) {
        const option = el("option", null, reason.display || reason.code);
        option.value = String(reason.code || "");
        select.append(option);
      }
      label.append(select);
      box.append(label);
      node.append(box);
    }
    return node;
  }

  function renderCards(container, cards) {
    container.replaceChildren(...cards.map(renderCard));
    if (!cards.length) container.append(el("p", "muted no-cards", "No cards: the service has nothing to say about this request."));
  }

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
    const { ok, body } = await getJson("/preview/api/scenarios");
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
    document.body.dataset.ready = "true";
  }

  async function loadScenario(name) {
    current = null;
    document.getElementById("scenario-description").textContent = "";
    if (!name) return;
    const { ok, body } = await getJson("/preview/api/scenarios/" + encodeURIComponent(name));
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

  async function run() {
    let request;
    try {
      request = JSON.parse(document.getElementById("request").value);
    } catch (error) {
      return setStatus("The request is not valid JSON: " + error.message, true);
    }
    const scenarioRequest = current && JSON.stringify(current.request) === JSON.stringify(request);
    setStatus("Evaluating…");
    const { ok, status, body } = await getJson("/preview/api/cards", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        request: request,
        service: document.getElementById("service").value || undefined,
        now: document.getElementById("now").value.trim() || undefined,
      }),
    });
    document.getElementById("raw-response").textContent = JSON.stringify(body, null, 2);
    const cards = document.getElementById("cards");
    if (!ok) {
      cards.replaceChildren();
      document.getElementById("expected").hidden = true;
      const problems = (body.problems || []).map((p) => p.path + ": " + p.message).join("; ");
      return setStatus("HTTP " + status + " " + (body.error || "") + ": " + (body.message || "") + (problems ? " (" + problems + ")" : ""), true);
    }
    renderCards(cards, body.cards || []);
    showExpected(scenarioRequest ? current.expected : null, body.cards || []);
    const sources = Object.entries(body.sources || {}).map(([k, v]) => k + "=" + v).join(", ");
    setStatus((body.cards || []).length + " card(s) from " + body.service + " as of " + body.now + (sources ? "; data: " + sources : ""));
    document.body.dataset.evaluated = String(Number(document.body.dataset.evaluated || 0) + 1);
  }

  window.cdsPreview = { renderMarkdown: renderMarkdown, renderCards: renderCards, escapeHtml: escapeHtml };

  document.addEventListener("DOMContentLoaded", () => {
    document.getElementById("scenario").addEventListener("change", (e) => loadScenario(e.target.value));
    document.getElementById("run").addEventListener("click", () => run());
    loadScenarios().catch((error) => setStatus("Could not list scenarios: " + error.message, true));
  });
})();
