import { StrictMode, useCallback, useEffect, useMemo, useRef, useState } from "react";
import { createRoot } from "react-dom/client";
import { ReactFlowProvider } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { api } from "./api.js";
import { layoutSubject, stepIds } from "./layout.js";
import { SchemaForm } from "./SchemaForm.jsx";
import { Source } from "./Source.jsx";
import { Canvas, CanvasState, DRAG_KIND, DRAG_STEP, calledSequence } from "./Canvas.jsx";
import { Palette, TryPanel } from "./panels.jsx";
import { Namespaces, AddToFile, Params } from "./FilePanel.jsx";
import { opened, editsOf, dirty, pushed, moved, savedAt, reloaded } from "./history.js";

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const WATCH_MS = 3000; // how often the open file is compared with the disk (another tab, another editor)

function stepValue(step) {
  const value = { [step.kind]: step.config };
  if (step.id) value.id = step.id;
  if (step.description) value.description = step.description;
  return value;
}

function findStep(outline, path) {
  let found = null;
  const visit = (lanes) => lanes.forEach((l) => l.steps.forEach((s) => { if (same(s.path, path)) found = s; else visit(s.lanes); }));
  outline.flows.forEach((f) => visit(f.lanes));
  outline.sequences.forEach((f) => visit(f.lanes));
  return found;
}

function positions(subject) {
  // slots and steps in reading order, for the arrow keys
  const out = [];
  const visit = (lane) => {
    out.push({ type: "slot", lane: lane.path, index: 0 });
    lane.steps.forEach((s, i) => { out.push({ type: "step", path: s.path }); s.lanes.forEach(visit); out.push({ type: "slot", lane: lane.path, index: i + 1 }); });
  };
  subject.lanes.forEach(visit);
  return out;
}

/** the flows and sequences of a file, each a canvas of its own */
function subjectsOf(outline) {
  return [...outline.flows.map((f) => ({ ...f, type: "flow" })), ...outline.sequences.map((s) => ({ ...s, type: "sequence" }))];
}

function App() {
  const [registry, setRegistry] = useState(null);
  const [files, setFiles] = useState([]);
  const [name, setName] = useState(null);
  const [hist, setHist] = useState(null); // undo history of the open file (history.js)
  const histRef = useRef(null);
  const [view, setView] = useState(null); // {type: "flow" | "sequence", name}
  const pendingView = useRef(null); // what to show once a file being opened is there
  const [selected, setSelected] = useState(null);
  const [clipboard, setClipboard] = useState(null);
  const [message, setMessage] = useState(null);
  const [conflict, setConflict] = useState(null); // the file changed on disk under unsaved edits
  const [run, setRun] = useState(null);
  const [tab, setTab] = useState("properties");
  const searchRef = useRef(null);
  const canvasRef = useRef(null);
  const busy = useRef(Promise.resolve());

  const commit = (h) => { histRef.current = h; setHist(h); };
  // one server call at a time, in order, each reading the history as the last one left it
  const enqueue = (task) => {
    busy.current = busy.current.then(task).catch((e) => {
      if (e.problem?.status === 409) setConflict({ detail: e.message });
      else setMessage(e.message);
    });
    return busy.current;
  };
  const refreshFiles = () => api.files().then((f) => setFiles(f.files));

  useEffect(() => { api.registry().then(setRegistry); refreshFiles(); }, []);
  useEffect(() => {
    if (!name && files.length) setName((files.find((f) => !f.suite && f.flows?.length) || files[0]).name);
  }, [files, name]);
  useEffect(() => {
    if (!name) return;
    // a file chosen while another was still opening: the older answer may come last, and must
    // not replace the chosen file on the canvas (the first file opens by itself at start)
    let chosen = true;
    api.open(name).then((state) => {
      if (!chosen) return;
      commit(opened(state)); setRun(null); setSelected(null); setConflict(null);
      const wanted = pendingView.current;
      pendingView.current = null;
      const subjects = subjectsOf(state.outline);
      setView(wanted && subjects.some((s) => s.type === wanted.type && s.name === wanted.name) ? wanted
        : subjects[0] ? { type: subjects[0].type, name: subjects[0].name } : null);
    }).catch((e) => { if (chosen) setMessage(e.message); });
    return () => { chosen = false; };
  }, [name]);

  const doc = hist ? hist.entries[hist.at].state : null;
  const base = hist ? hist.entries[hist.saved].state.hash : null;
  const kindInfo = useCallback((k) => registry?.kinds.find((x) => x.name === k), [registry]);
  const subjects = doc ? subjectsOf(doc.outline) : [];
  const subject = subjects.find((s) => view && s.type === view.type && s.name === view.name) || subjects[0] || null;

  const layout = useMemo(() => {
    if (!subject) return null;
    const started = performance.now();
    const ids = new Map();
    if (subject.type === "flow") {
      subject.lanes[0].sid = `${subject.name}/steps`;
      subject.lanes[1].sid = `${subject.name}/on_error`;
      stepIds(subject.name, subject.lanes[0].sid, subject.lanes[0].steps, ids);
      stepIds(subject.name, subject.lanes[1].sid, subject.lanes[1].steps, ids);
    } else {
      // the compiler's ids for a sequence's steps (engine/compiler.py)
      subject.lanes[0].sid = `sequence:${subject.name}/steps`;
      stepIds(`sequence:${subject.name}`, subject.lanes[0].sid, subject.lanes[0].steps, ids);
    }
    const out = layoutSubject(subject);
    /** @type {any} */ (window).__designerLayoutMs = performance.now() - started;
    return { ...out, ids };
  }, [doc, subject?.type, subject?.name]);

  const problemsByStep = useMemo(() => {
    const m = new Map();
    for (const p of doc?.problems || []) if (p.step && !m.has(JSON.stringify(p.step))) m.set(JSON.stringify(p.step), p);
    return m;
  }, [doc]);

  const runView = useMemo(() => {
    if (!run || !layout) return null;
    const byPath = new Map();
    const lanes = new Set(run.trace);
    for (const r of run.steps) {
      const path = layout.ids.get(r.id);
      if (path) byPath.set(JSON.stringify(path), r);
      const parent = r.id.replace(/\[\d+\]$/, "");
      lanes.add(parent);
      lanes.add(parent.replace(/\/steps$/, ""));
    }
    return { byPath, lanes };
  }, [run, layout]);

  // every change goes through the server, which applies it to the file's text as a patch
  const edit = (op, typed = false) => enqueue(() => {
    const h = histRef.current;
    const ops = op.op === "text" ? [op] : [...editsOf(h), op];
    return api.preview(name, h.entries[h.saved].state.hash, ops).then((state) => {
      commit(pushed(histRef.current, ops, state, typed)); setMessage(null);
    });
  });
  const undo = () => { const h = histRef.current; if (h && h.at > 0) commit(moved(h, h.at - 1)); };
  const redo = () => { const h = histRef.current; if (h && h.at < h.entries.length - 1) commit(moved(h, h.at + 1)); };
  const save = () => enqueue(() => {
    const h = histRef.current;
    if (!h || !dirty(h)) return;
    return api.save(name, h.entries[h.saved].state.hash, editsOf(h)).then((state) => {
      commit(savedAt(histRef.current, state)); setMessage(`saved ${name}`); refreshFiles();
    });
  });
  // the file changed on disk: take its text, and put the unsaved edits on top where they still apply
  const reload = (keepEdits) => enqueue(() => api.open(name).then((disk) => {
    const h = histRef.current;
    const ops = editsOf(h);
    setConflict(null);
    if (!keepEdits || !ops.length || ops.some((o) => o.op === "text")) {
      commit(reloaded(h, disk, null));
      setMessage(ops.length ? "reloaded from disk: Undo brings your version back" : "reloaded: the file changed on disk");
      return;
    }
    return api.preview(name, disk.hash, ops).then((state) => {
      commit(reloaded(h, disk, { ops, state }));
      setMessage(`reloaded from disk, your ${ops.length} edit${ops.length === 1 ? "" : "s"} applied again: save to keep them`);
    }).catch((e) => {
      commit(reloaded(h, disk, null));
      setMessage(`reloaded from disk; your edits did not apply to the new text (${e.message}): Undo brings your version back`);
    });
  }));
  // another tab or editor saved the file: follow it, or say so when there are unsaved edits
  useEffect(() => {
    if (!name) return undefined;
    const timer = setInterval(() => {
      const h = histRef.current;
      if (!h || document.hidden) return;
      api.files().then((f) => {
        const entry = f.files.find((x) => x.name === name);
        const now = histRef.current;
        if (!entry?.hash || now !== h || entry.hash === now.entries[now.saved].state.hash) return;
        if (dirty(now)) setConflict({ detail: `${name} was changed on disk (another tab or editor) while you have unsaved edits` });
        else reload(false);
      }).catch(() => {});
    }, WATCH_MS);
    return () => clearInterval(timer);
  }, [name]);

  const insertAt = (lane, index, value) => edit({ op: "insert", path: lane, index, value })
    .then(() => setSelected({ type: "step", path: [...lane, index] }));
  const target = () => {
    if (selected?.type === "slot") return [selected.lane, selected.index];
    if (selected?.type === "step") return [selected.path.slice(0, -1), selected.path[selected.path.length - 1] + 1];
    return subject ? [subject.lanes[0].path, subject.lanes[0].steps.length] : null;
  };
  const newStep = (k) => ({ [k.name]: k.example ?? {} });
  const insertKind = (k) => { const t = target(); if (t) insertAt(t[0], t[1], newStep(k)); canvasRef.current?.focus(); };
  const drop = (transfer, lane, index) => {
    const kind = transfer.getData(DRAG_KIND);
    if (kind) return insertAt(lane, index, newStep(kindInfo(kind)));
    const from = transfer.getData(DRAG_STEP);
    if (from) return edit({ op: "move", from: JSON.parse(from), path: lane, index });
  };
  // a sequence step's sequence: in this file, or in the file of the folder that declares it
  const openSequence = (sequence) => {
    if (doc?.outline.sequences.some((s) => s.name === sequence)) {
      setView({ type: "sequence", name: sequence }); setSelected(null); return;
    }
    const file = files.find((f) => f.sequences?.includes(sequence));
    if (!file) { setMessage(`no file of this folder declares the sequence ${sequence}`); return; }
    if (hist && dirty(hist) && !confirm(`${name} has unsaved edits; open ${file.name} anyway (they are dropped)?`)) return;
    pendingView.current = { type: "sequence", name: sequence };
    setName(file.name);
  };

  const onKey = (e) => {
    if (!subject) return;
    const mod = e.ctrlKey || e.metaKey;
    const all = positions(subject);
    const at = all.findIndex((p) => same(p, selected));
    if (e.key === "/") { e.preventDefault(); searchRef.current?.focus(); return; }
    if (e.key === "Escape") { setSelected(null); return; }
    if (mod && e.key.toLowerCase() === "z") { e.preventDefault(); e.shiftKey ? redo() : undo(); return; }
    if (mod && e.key.toLowerCase() === "y") { e.preventDefault(); redo(); return; }
    if (e.altKey && selected?.type === "step" && (e.key === "ArrowUp" || e.key === "ArrowDown")) {
      e.preventDefault();
      const lane = selected.path.slice(0, -1);
      const i = selected.path[selected.path.length - 1];
      const to = e.key === "ArrowUp" ? i - 1 : i + 2;
      if (to >= 0) edit({ op: "move", from: selected.path, path: lane, index: to });
      return;
    }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const next = all[Math.max(0, Math.min(all.length - 1, at + (e.key === "ArrowDown" ? 1 : -1)))];
      if (next) setSelected(next);
      return;
    }
    if ((e.key === "Delete" || e.key === "Backspace") && selected?.type === "step") {
      e.preventDefault(); edit({ op: "remove", path: selected.path }); setSelected(null); return;
    }
    if (mod && (e.key.toLowerCase() === "c" || e.key.toLowerCase() === "x") && selected?.type === "step") {
      const step = findStep(doc.outline, selected.path);
      if (step) setClipboard({ value: stepValue(step), cut: e.key.toLowerCase() === "x" ? selected.path : null });
      e.preventDefault(); return;
    }
    if (mod && e.key.toLowerCase() === "v" && clipboard) {
      e.preventDefault();
      const t = target();
      if (!t) return;
      if (clipboard.cut) { edit({ op: "move", from: clipboard.cut, path: t[0], index: t[1] }); setClipboard({ value: clipboard.value, cut: null }); }
      else insertAt(t[0], t[1], clipboard.value);
      return;
    }
    if (e.key === "Enter" && selected?.type === "step") {
      e.preventDefault();
      const step = findStep(doc.outline, selected.path);
      if (e.altKey && step && calledSequence(step)) { openSequence(calledSequence(step)); return; }
      setTab("properties");
      setTimeout(() => /** @type {HTMLElement | null} */ (document.querySelector("[data-testid=step-form] input")
        || document.querySelector("[data-testid=step-form] select, [data-testid=step-form] textarea"))?.focus(), 0);
    }
  };

  const saveRef = useRef(save);
  saveRef.current = save;
  useEffect(() => {
    const onWindowKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); saveRef.current(); }
      // Escape leaves the side panel for the canvas, but first closes an open completion list
      if (e.key === "Escape" && e.target.closest?.(".side") && !document.querySelector(".cm-tooltip-autocomplete")) canvasRef.current?.focus();
    };
    window.addEventListener("keydown", onWindowKey, true);
    return () => window.removeEventListener("keydown", onWindowKey, true);
  }, []);

  // the canvas's handlers keep one identity (the boxes are memoised on it) and call the latest
  const actionsRef = useRef(null);
  actionsRef.current = { select: setSelected, drop, openSequence, kindInfo };
  const actions = useMemo(() => ({
    select: (s) => actionsRef.current.select(s),
    drop: (t, lane, index) => actionsRef.current.drop(t, lane, index),
    openSequence: (n) => actionsRef.current.openSequence(n),
    kindInfo: (k) => actionsRef.current.kindInfo(k),
  }), []);
  const canvasState = useMemo(() => ({ actions, selected, problemsByStep, run: runView, cut: clipboard?.cut }),
    [actions, selected, problemsByStep, runView, clipboard]);

  const selectedStep = selected?.type === "step" && doc ? findStep(doc.outline, selected.path) : null;
  const suiteFile = name && files.find((f) => f.name === name.replace(/\.ya?ml$/, ".test.yaml")) ? name.replace(/\.ya?ml$/, ".test.yaml") : null;
  const cases = files.find((f) => f.name === suiteFile)?.cases || [];
  const lastRequest = useRef(null);
  const tryIt = (body) => {
    setMessage("running...");
    lastRequest.current = body.request || null;
    return api.tryIt({ file: name, base, edits: editsOf(histRef.current), ...body }).then((r) => { setRun(r); setMessage(null);
      if (!lastRequest.current) lastRequest.current = r.request.body ? { method: r.request.method, path: r.request.path, json: safeJson(r.request.body) } : { method: r.request.method, path: r.request.path };
    }).catch((e) => setMessage(e.message));
  };
  const saveCase = (caseName) => {
    const expect = { status: run.response.status };
    const json = safeJson(run.response.body);
    if (json !== undefined) expect.json = json; else if (run.response.body) expect.text = run.response.body;
    const request = lastRequest.current || { method: run.request.method, path: run.request.path };
    api.addCase(suiteFile || name.replace(/\.ya?ml$/, ".test.yaml"), { name: caseName, request, expect })
      .then(() => { setMessage(`case "${caseName}" saved`); refreshFiles(); }).catch((e) => setMessage(e.message));
  };
  const record = selectedStep && runView ? runView.byPath.get(JSON.stringify(selectedStep.path)) : null;

  const onFormChange = (basePath) => (rel, value) => {
    const path = [...basePath, ...rel];
    edit(value === undefined ? { op: "remove", path } : { op: "set", path, value });
  };
  const addToFile = (what, key, value) => {
    const section = { flow: "flows", endpoint: "endpoints", sequence: "sequences" }[what];
    const has = what === "flow" ? doc.outline.flows.length : what === "endpoint" ? doc.outline.endpoints.length : doc.outline.sequences.length;
    const op = has ? { op: "set", path: [section, key], value } : { op: "set", path: [section], value: { [key]: value } };
    edit(op).then(() => { if (what !== "endpoint") setView({ type: what, name: key }); else setTab("endpoints"); });
  };
  const typedSource = useRef(null);
  typedSource.current = (text) => edit({ op: "text", text }, true);
  const sourceTimer = useRef(null);
  const debouncedSource = useCallback((text) => { clearTimeout(sourceTimer.current); sourceTimer.current = setTimeout(() => typedSource.current(text), 400); }, []);
  // what the YAML view completes values from: the registry, and the names this folder declares
  const names = useMemo(() => ({
    endpoints: [...new Set([...files.flatMap((f) => f.endpoints || []), ...(doc?.outline.endpoints.map((e) => e.name) || [])])].sort(),
    sequences: [...new Set([...files.flatMap((f) => f.sequences || []), ...(doc?.outline.sequences.map((s) => s.name) || [])])].sort(),
    kinds: registry?.kinds || [],
    connectors: registry?.connectors || [],
  }), [files, doc, registry]);

  if (!registry) return <div className="loading">loading the registry…</div>;
  const endpointKinds = Object.fromEntries(registry.connectors.map((c) => [c.name, c.schema]));
  const canUndo = hist && hist.at > 0;
  const canRedo = hist && hist.at < hist.entries.length - 1;
  const isDirty = hist && dirty(hist);
  const template = registry.schema.properties.sequences.additionalProperties.anyOf[1];
  return (
    <div className="app" data-file={doc?.name || ""}>
      <header>
        <b>Interlace designer</b>
        <select data-testid="file" value={name || ""} onChange={(e) => setName(e.target.value)}>
          {files.map((f) => <option key={f.name} value={f.name}>{f.name}</option>)}
        </select>
        {subjects.length > 1 || subject?.type === "sequence" ? (
          <select data-testid="subject" value={subject ? `${subject.type}:${subject.name}` : ""}
            onChange={(e) => { const [type, ...rest] = e.target.value.split(":"); setView({ type, name: rest.join(":") }); setSelected(null); }}>
            {subjects.map((s) => <option key={`${s.type}:${s.name}`} value={`${s.type}:${s.name}`}>{s.type}: {s.name}</option>)}
          </select>) : null}
        <button onClick={() => { const n = prompt("new flow file name", "new-flow.yaml"); if (n) api.create(n).then(() => refreshFiles().then(() => setName(n))).catch((e) => setMessage(e.message)); }}>New file</button>
        <button data-testid="undo" disabled={!canUndo} onClick={undo} title={`Ctrl+Z${hist && hist.at > hist.saved ? "" : canUndo ? " (back past the last save)" : ""}`}>Undo</button>
        <button data-testid="redo" disabled={!canRedo} onClick={redo} title="Ctrl+Shift+Z">Redo</button>
        <button data-testid="save" disabled={!isDirty} onClick={save} title="Ctrl+S">Save{isDirty ? " •" : ""}</button>
        <span className="status" data-testid="status">{message}</span>
        <span className={`problems-count${doc?.problems.length ? " bad" : ""}`} data-testid="problem-count">{doc ? `${doc.problems.length} problem${doc.problems.length === 1 ? "" : "s"}` : ""}</span>
      </header>
      {conflict ? (
        <div className="conflict" data-testid="conflict">
          {conflict.detail}
          <button data-testid="reload-keep" onClick={() => reload(true)}>Reload, applying my edits again</button>
          <button data-testid="reload-drop" onClick={() => reload(false)}>Reload (Undo brings mine back)</button>
        </div>) : null}
      <main>
        <Palette kinds={registry.kinds} onInsert={insertKind} searchRef={searchRef} />
        <section className="canvas composited" tabIndex={0} ref={canvasRef} onKeyDown={onKey} data-testid="canvas" aria-label="flow canvas">
          {subject && layout ? (
            <CanvasState.Provider value={canvasState}>
              <Canvas layout={layout} viewKey={`${name}:${subject.type}:${subject.name}`} hostRef={canvasRef}
                onPaneClick={() => setSelected(null)} />
            </CanvasState.Provider>) : <div className="empty">{doc?.suite ? "A test suite: see its YAML." : doc && !doc.parsed ? "The file does not parse: fix it in the YAML view." : "No flow in this file."}</div>}
          {doc?.problems.length ? (
            <ul className="problem-list" data-testid="problems">{doc.problems.map((p, i) => <li key={i} onClick={() => p.step && setSelected({ type: "step", path: p.step })}>{p.text}</li>)}</ul>) : null}
        </section>
        <aside className="side">
          <nav>{["properties", "try", "endpoints", "file"].map((t) => <button key={t} className={tab === t ? "on" : ""} data-testid={`tab-${t}`} onClick={() => setTab(t)}>{t}</button>)}</nav>
          <div className="panel">
            {tab === "properties" && selectedStep && kindInfo(selectedStep.kind) ? (
              <div className="form" data-testid="step-form">
                <h3>{selectedStep.kind} <small>{kindInfo(selectedStep.kind).summary}</small></h3>
                {calledSequence(selectedStep) ? <button data-testid="form-open-sequence" onClick={() => openSequence(calledSequence(selectedStep))}>Open the sequence {calledSequence(selectedStep)} ›</button> : null}
                <SchemaForm key={JSON.stringify(selectedStep.path)} schema={kindInfo(selectedStep.kind).schema} defs={kindInfo(selectedStep.kind).schema.$defs}
                  value={selectedStep.config} onChange={onFormChange([...selectedStep.path, selectedStep.kind])} />
                <SchemaForm schema={{ type: "string", pattern: "^[A-Za-z0-9_.-]+$", description: "A stable name for the step (traces, tests)." }} label="id"
                  value={selectedStep.id ?? undefined} onChange={(_, v) => edit(v === undefined ? { op: "remove", path: [...selectedStep.path, "id"] } : { op: "set", path: [...selectedStep.path, "id"], value: v })} testPrefix="meta" path={["id"]} />
                <p className="hint">Arrows: move between steps and slots · Alt+↑/↓: move the step · Del: delete · Ctrl+C/X/V · Ctrl+Z/Shift+Z · Ctrl+S · / : palette · Esc: select nothing · Alt+Enter on a sequence step: open it</p>
              </div>
            ) : null}
            {tab === "properties" && selected?.type === "head" && subject?.type === "flow" ? (
              <div className="form" data-testid="source-form"><h3>source of {subject.name}</h3>
                <SchemaForm schema={registry.schema.$defs.flow.properties.source} defs={registry.schema.$defs} value={subject.source}
                  onChange={onFormChange([...subject.path, "source"])} /></div>) : null}
            {tab === "properties" && selected?.type === "head" && subject?.type === "sequence" ? (
              subject.template ? (<>
                <div className="form" data-testid="sequence-form"><h3>sequence {subject.name}</h3>
                  <SchemaForm schema={template.properties.description} label="description" value={subject.description ?? undefined}
                    path={["description"]} onChange={onFormChange(subject.path)} testPrefix="seq" /></div>
                <Params sequence={subject} types={template.properties.params.additionalProperties.properties.type.enum} onEdit={edit} />
              </>) : <p className="hint" data-testid="sequence-form">The sequence {subject.name} is a plain step list. To give it parameters (a template), write it in the YAML view as <code>{"{params: ..., steps: [...]}"}</code>; it is drawn and edited the same way after.</p>
            ) : null}
            {tab === "properties" && !selectedStep && selected?.type !== "head" ? <p className="hint">Select a step (click, or the arrow keys on the canvas) to edit it; drag a step kind from the palette onto a + slot, or select a slot and press Enter in the palette. Click the box at the top for the flow's source or the sequence's parameters.</p> : null}
            {tab === "try" ? <TryPanel file={name} suiteFile={suiteFile} cases={cases} onRun={tryIt} run={run} onSaveCase={saveCase} selectedRecord={record} requestSchema={registry?.suite_schema?.properties?.cases?.items?.properties?.request} /> : null}
            {tab === "endpoints" ? (doc?.outline.endpoints.length ? doc.outline.endpoints.map((ep) => (
              <div className="form" key={ep.name} data-testid={`endpoint-${ep.name}`}><h3>{ep.name} <small>{ep.kind}</small></h3>
                {endpointKinds[ep.kind] ? <SchemaForm schema={endpointKinds[ep.kind]} defs={endpointKinds[ep.kind].$defs} value={ep.config} testPrefix={`ep-${ep.name}`}
                  onChange={onFormChange([...ep.path, ep.kind])} /> : <p>unknown connector kind</p>}</div>)) : <p className="hint">No endpoints in this file (add one in the file tab).</p>) : null}
            {tab === "file" && doc && !doc.suite && doc.parsed ? (<>
              <AddToFile outline={doc.outline} connectors={registry.connectors} onAdd={addToFile} />
              <Namespaces namespaces={doc.outline.namespaces} description={registry.schema.properties.namespaces?.description || ""} onEdit={edit} />
            </>) : null}
          </div>
          {doc ? <Source text={doc.text} schema={doc.suite ? registry.suite_schema : registry.schema} problems={doc.problems} fileName={name} names={names} echo={Boolean(hist?.typed)} onChange={debouncedSource} /> : null}
        </aside>
      </main>
    </div>
  );
}

function safeJson(text) { try { return text ? JSON.parse(text) : undefined; } catch { return undefined; } }

createRoot(document.getElementById("root")).render(<StrictMode><ReactFlowProvider><App /></ReactFlowProvider></StrictMode>);
