// The panel's chat views (anywidget ES module, no build step). Python keeps every decision;
// these views only draw what the model says and report clicks and keys.
//   kind "log":      the transcript (trait `value`, HTML made and escaped in Python) and the
//                    reply streaming now, sent as custom messages carrying only new text.
//   kind "prompt":   a text box: Enter sends, Shift+Enter adds a line.
//   kind "sessions": the session picker, one card per session (title, detail, summary).

function nearBottom(el) {
  return el.scrollHeight - el.scrollTop - el.clientHeight < 24;
}

function renderLog({ model, el }) {
  el.classList.add("cj-chat");
  const scroll = document.createElement("div");
  scroll.className = "cj-scroll";
  const history = document.createElement("div");
  history.className = "copilot-history";
  const live = document.createElement("div");
  live.className = "copilot-live";
  scroll.append(history, live);
  el.append(scroll);

  const state = { id: null, text: "", total: 0, model: "" };
  const setHeight = () => { scroll.style.height = model.get("height"); };
  const keepBottom = (change) => {
    const stick = nearBottom(scroll);
    change();
    if (stick) scroll.scrollTop = scroll.scrollHeight;
  };
  const drawHistory = () => keepBottom(() => { history.innerHTML = model.get("value"); });
  const drawLive = () => keepBottom(() => {
    live.replaceChildren();
    if (state.id === null) return;
    const box = document.createElement("div");
    box.className = "cj-msg cj-assistant cj-streaming";
    const role = document.createElement("div");
    role.className = "cj-role";
    role.textContent = state.model + " ";
    const typing = document.createElement("span");
    typing.className = "cj-typing";
    typing.textContent = "writing…";
    role.append(typing);
    const body = document.createElement("div");
    body.className = "cj-body cj-live-text";
    const hidden = state.total - state.text.length;
    if (hidden > 0) {
      const cut = document.createElement("div");
      cut.className = "cj-cut";
      cut.textContent = `… ${hidden.toLocaleString("en")} earlier characters (shown when the reply ends)`;
      body.append(cut);
    }
    body.append(document.createTextNode(state.text));
    const cursor = document.createElement("span");
    cursor.className = "cj-cursor";
    cursor.textContent = "▍";
    body.append(cursor);
    box.append(role, body);
    live.append(box);
  });
  const onMessage = (msg) => {
    if (msg.op !== "live") return;
    if (msg.clear) {
      state.id = null; state.text = ""; state.total = 0;
    } else {
      const limit = model.get("live_chars");
      state.text = msg.append ? state.text + msg.text : msg.text;
      if (state.text.length > limit) state.text = state.text.slice(-limit);
      state.id = msg.id; state.total = msg.total; state.model = msg.model;
    }
    drawLive();
  };
  setHeight();
  drawHistory();
  model.on("change:value", drawHistory);
  model.on("change:height", setHeight);
  model.on("msg:custom", onMessage);
  model.send({ event: "ready" });  // Python answers with the whole live text, if any
  scroll.scrollTop = scroll.scrollHeight;
  return () => {
    model.off("change:value", drawHistory);
    model.off("change:height", setHeight);
    model.off("msg:custom", onMessage);
  };
}

function renderPrompt({ model, el }) {
  el.classList.add("cj-prompt-box");
  const box = document.createElement("textarea");
  box.className = "cj-prompt-text";
  box.rows = model.get("rows");
  // Keep every key from JupyterLab's shortcuts (Shift+Enter must not run the cell).
  box.setAttribute("data-lm-suppress-shortcuts", "true");
  const draw = () => {
    if (box.value !== model.get("value")) box.value = model.get("value");
    box.placeholder = model.get("placeholder");
    box.disabled = model.get("disabled");
  };
  box.addEventListener("input", () => {
    model.set("value", box.value);
    model.save_changes();
  });
  box.addEventListener("keydown", (event) => {
    event.stopPropagation();
    if (event.key !== "Enter" || event.shiftKey || event.isComposing) return;
    event.preventDefault();  // Enter sends; Shift+Enter keeps the textarea's new line
    // Empty the box at once and hand Python the text; Python puts it back ("restore") if it
    // does not send it. Clearing here, not from Python, keeps the order of `value` updates:
    // ipywidgets may still hold queued updates of the last key presses, and a clear sent
    // from Python would be overwritten by their echo.
    const text = box.value;
    box.value = "";
    model.set("value", "");
    model.save_changes();
    model.send({ event: "submit", text });
  });
  // Python sets the box's text with a message, not only with `value`, for the same reason:
  // "clear" after the Send button sent it, "restore" when Enter's text was not sent.
  const onMessage = (msg) => {
    if (msg.op !== "clear" && msg.op !== "restore") return;
    const text = msg.op === "clear" ? "" : msg.text;
    box.value = text;
    // Send `value` even if the model holds it already (set it to something else first): the
    // browser then ignores the echo of any older `value` update still on its way back.
    model.set("value", text + "\u0000");
    model.set("value", text);
    model.save_changes();
  };
  draw();
  model.on("change", draw);
  model.on("msg:custom", onMessage);
  el.append(box);
  return () => {
    model.off("change", draw);
    model.off("msg:custom", onMessage);
  };
}

function renderSessions({ model, el }) {
  el.classList.add("cj-sessions");
  const list = document.createElement("div");
  list.className = "cj-session-list";
  list.setAttribute("role", "listbox");
  list.setAttribute("data-lm-suppress-shortcuts", "true");  // keys stay in the list
  list.style.height = model.get("height");
  el.append(list);
  const draw = () => {
    const selected = model.get("value");
    list.replaceChildren();
    for (const item of model.get("items")) {
      const card = document.createElement("div");
      card.className = "cj-session" + (item.id === selected ? " cj-selected" : "");
      card.setAttribute("role", "option");
      card.setAttribute("aria-selected", String(item.id === selected));
      card.dataset.session = item.id;
      card.title = item.summary ? `${item.title}\n${item.summary}` : item.title;
      const title = document.createElement("div");
      title.className = "cj-session-title";
      title.textContent = item.title;
      const detail = document.createElement("div");
      detail.className = "cj-session-detail";
      detail.textContent = item.detail;
      card.append(title, detail);
      if (item.summary) {
        const summary = document.createElement("div");
        summary.className = "cj-session-summary";
        summary.textContent = item.summary;
        card.append(summary);
      }
      card.tabIndex = 0;  // reachable with Tab; Enter or Space picks it
      const pick = () => {
        model.set("value", item.id);
        model.save_changes();
      };
      card.addEventListener("click", pick);
      card.addEventListener("keydown", (event) => {
        if (event.key !== "Enter" && event.key !== " ") return;
        event.preventDefault();
        event.stopPropagation();
        pick();
      });
      list.append(card);
    }
    if (!model.get("items").length) {
      const empty = document.createElement("div");
      empty.className = "cj-empty";
      empty.textContent = "No sessions yet: press New, or type a prompt and press Enter.";
      list.append(empty);
    }
  };
  draw();
  model.on("change:items", draw);
  model.on("change:value", draw);
  return () => {
    model.off("change:items", draw);
    model.off("change:value", draw);
  };
}

const VIEWS = { log: renderLog, prompt: renderPrompt, sessions: renderSessions };

export default {
  render(context) {
    return VIEWS[context.model.get("kind")](context);
  },
};
