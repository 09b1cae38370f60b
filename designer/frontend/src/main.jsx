import { StrictMode, useCallback, useEffect, useMemo, useRef, useState, memo } from "react";
import { createRoot } from "react-dom/client";
import { ReactFlow, ReactFlowProvider, Background, Controls, MiniMap, Handle, Position, useReactFlow } from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import "./styles.css";
import { api } from "./api.js";
import { layoutFlow, stepIds, flattenSlots } from "./layout.js";
import { SchemaForm, Highlighted } from "./SchemaForm.jsx";
import { Source } from "./Source.jsx";

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);
const DRAG_KIND = "application/x-interlace-kind";
const DRAG_STEP = "application/x-interlace-step";

// --- canvas nodes ----------------------------------------------------------------------------

const Ctx = { current: null }; // the app's handlers, read by the node components

function StepNode({ data }) {
  const { step } = data;
  const app = Ctx.current;
  const selected = app.selected?.type === "step" && same(app.selected.path, step.path);
  const problem = app.problemsByStep.get(JSON.stringify(step.path));
  const record = app.run?.byPath.get(JSON.stringify(step.path));
  const cls = ["step", "nodrag", "nopan", step.lanes.length ? "container" : "", selected ? "selected" : "", problem ? "has-problem" : "",
    record ? (record.error ? "run-error" : "ran") : "", app.cut && same(app.cut, step.path) ? "cut" : ""].join(" ");
  return (
    <div className={cls} data-testid={`step-${step.path.join(".")}`} data-kind={step.kind} draggable
      onDragStart={(e) => { e.dataTransfer.setData(DRAG_STEP, JSON.stringify(step.path)); e.dataTransfer.effectAllowed = "move"; }}
      onClick={(e) => { e.stopPropagation(); app.select({ type: "step", path: step.path }); }}>
      <Handle type="target" position={Position.Top} className="handle" />
      <div className="step-head">
        <span className={`kind cat-${app.kindInfo(step.kind)?.category || "unknown"}`}>{step.kind || "?"}</span>
        {step.id ? <span className="sid">#{step.id}</span> : null}
        {record ? <span className="ms" data-testid="ms">{record.ms} ms</span> : null}
      </div>
      <div className="summary">{step.summary}</div>
      {problem ? <div className="problem" title={problem.text}>{problem.text}</div> : null}
      {record?.error ? <div className="problem">raised: {record.error.message}</div> : null}
      <Handle type="source" position={Position.Bottom} className="handle" />
    </div>
  );
}

function LaneNode({ data }) {
  const app = Ctx.current;
  const taken = app.run?.lanes.has(data.lane.sid);
  return <div className={`lane${taken ? " taken" : ""}`} data-testid={`lane-${data.lane.path.join(".")}`}><span className="lane-label">{data.lane.label}</span></div>;
}

function SlotNode({ data }) {
  const app = Ctx.current;
  const [over, setOver] = useState(false);
  const selected = app.selected?.type === "slot" && same(app.selected.lane, data.lane) && app.selected.index === data.index;
  return (
    <div className={`slot${over ? " over" : ""}${selected ? " selected" : ""}`} data-testid={`slot-${data.lane.join(".")}-${data.index}`}
      onClick={(e) => { e.stopPropagation(); app.select({ type: "slot", lane: data.lane, index: data.index }); }}
      onDragOver={(e) => { e.preventDefault(); setOver(true); }} onDragLeave={() => setOver(false)}
      onDrop={(e) => { e.preventDefault(); setOver(false); app.drop(e.dataTransfer, data.lane, data.index); }}>
      <span>+</span>
    </div>
  );
}

function SourceNode({ data }) {
  const app = Ctx.current;
  const http = data.flow.source?.http || {};
  return (
    <div className={`source-node${app.selected?.type === "source" ? " selected" : ""}`} data-testid="flow-source"
      onClick={(e) => { e.stopPropagation(); app.select({ type: "source" }); }}>
      <b>{data.flow.name}</b> <span className="summary">{(http.methods || [http.method || "POST"]).join(",")} {http.path}</span>
      <Handle type="source" position={Position.Bottom} className="handle" />
    </div>
  );
}

const nodeTypes = { step: memo(StepNode), lane: memo(LaneNode), slot: memo(SlotNode), source: memo(SourceNode) };

// --- the palette -----------------------------------------------------------------------------

function Palette({ kinds, onInsert, searchRef }) {
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const shown = kinds.filter((k) => (k.name + " " + k.summary + " " + k.category).toLowerCase().includes(query.toLowerCase()));
  const groups = {};
  shown.forEach((k) => (groups[k.category] ||= []).push(k));
  const ordered = Object.keys(groups).sort().flatMap((g) => groups[g]);
  return (
    <aside className="palette" aria-label="step kinds">
      <input ref={searchRef} data-testid="palette-search" placeholder="search steps  ( / )" value={query}
        onChange={(e) => { setQuery(e.target.value); setActive(0); }}
        onKeyDown={(e) => {
          e.stopPropagation();
          if (e.key === "ArrowDown") { setActive((a) => Math.min(a + 1, ordered.length - 1)); e.preventDefault(); }
          if (e.key === "ArrowUp") { setActive((a) => Math.max(a - 1, 0)); e.preventDefault(); }
          if (e.key === "Enter" && ordered[active]) { onInsert(ordered[active]); e.preventDefault(); }
          if (e.key === "Escape") e.target.blur();
        }} />
      {Object.keys(groups).sort().map((group) => (
        <div key={group} className="group">
          <h4>{group}</h4>
          {groups[group].map((k) => (
            <div key={k.name} className={`kind-item cat-${k.category}${ordered[active] === k ? " active" : ""}`} draggable title={k.summary}
              data-testid={`palette-${k.name}`} onDragStart={(e) => { e.dataTransfer.setData(DRAG_KIND, k.name); e.dataTransfer.effectAllowed = "copy"; }}
              onDoubleClick={() => onInsert(k)}>
              <b>{k.name}</b><small>{k.summary}</small>
            </div>
          ))}
        </div>
      ))}
    </aside>
  );
}

// --- try it ----------------------------------------------------------------------------------

function TryPanel({ file, suiteFile, cases, onRun, run, onSaveCase, selectedRecord }) {
  const [caseIndex, setCaseIndex] = useState(cases.length ? "0" : "");
  const [method, setMethod] = useState("POST");
  const [path, setPath] = useState("/");
  const [body, setBody] = useState("{}");
  const [mocks, setMocks] = useState(Boolean(suiteFile));
  const [caseName, setCaseName] = useState("");
  useEffect(() => setCaseIndex(cases.length ? "0" : ""), [file, cases.length]);
  const go = () => {
    if (caseIndex !== "") onRun({ suite: suiteFile, case: Number(caseIndex), mocks });
    else {
      let request = { method, path };
      try { if (body.trim()) request.json = JSON.parse(body); } catch { request.text = body; }
      onRun({ request, mocks, suite: suiteFile || undefined });
    }
  };
  return (
    <div className="try" data-testid="try-panel">
      <label>request <select data-testid="try-case" value={caseIndex} onChange={(e) => setCaseIndex(e.target.value)}>
        <option value="">a request of my own</option>
        {cases.map((c, i) => <option key={i} value={i}>case: {c}</option>)}
      </select></label>
      {caseIndex === "" ? (
        <div className="own">
          <select value={method} onChange={(e) => setMethod(e.target.value)}>{["GET", "POST", "PUT", "PATCH", "DELETE"].map((m) => <option key={m}>{m}</option>)}</select>
          <input data-testid="try-path" value={path} onChange={(e) => setPath(e.target.value)} onKeyDown={(e) => e.stopPropagation()} />
          <textarea data-testid="try-body" rows={3} value={body} onChange={(e) => setBody(e.target.value)} onKeyDown={(e) => e.stopPropagation()} />
        </div>) : null}
      <label className="check"><input type="checkbox" checked={mocks} disabled={!suiteFile} onChange={(e) => setMocks(e.target.checked)} /> the suite's mocks{suiteFile ? ` (${suiteFile})` : " (no suite)"}</label>
      <button data-testid="try-run" onClick={go}>Try it</button>
      {run ? (
        <div className="run" data-testid="try-result">
          <div>answer <b data-testid="try-status">{run.response.status}</b> in {run.ms} ms{run.mocked ? " (mocked endpoints)" : ""}</div>
          <pre className="body">{run.response.body}</pre>
          <div className="save-case">
            <input placeholder="name of the new test case" value={caseName} data-testid="case-name" onChange={(e) => setCaseName(e.target.value)} onKeyDown={(e) => e.stopPropagation()} />
            <button data-testid="save-case" disabled={!caseName} onClick={() => onSaveCase(caseName)}>Save as test case</button>
          </div>
        </div>) : null}
      {selectedRecord ? <Record record={selectedRecord} /> : run ? <p className="hint">Click a step on the canvas to see the message after it.</p> : null}
    </div>
  );
}

function Record({ record }) {
  return (
    <div className="record" data-testid="step-record">
      <h4>{record.id} <small>{record.kind}, {record.ms} ms</small></h4>
      {record.error ? <div className="problem">raised {record.error.type}: {record.error.message}</div> : null}
      <div>status {record.message.status}{record.message.content_type ? `, ${record.message.content_type}` : ""}</div>
      <details open><summary>body</summary><pre data-testid="record-body">{record.message.body}</pre></details>
      <details><summary>headers</summary><pre>{JSON.stringify(record.message.headers, null, 1)}</pre></details>
      <details open={Object.keys(record.message.vars).length > 0}><summary>vars</summary><pre data-testid="record-vars">{JSON.stringify(record.message.vars, null, 1)}</pre></details>
      {record.calls.map((c, i) => (
        <details key={i} open className="call"><summary>call {c.endpoint}: {c.method} {c.path} → {c.status ?? c.error?.code} ({c.ms} ms)</summary>
          <pre>{c.request_body ?? ""}</pre><pre>{c.body ?? c.error?.message}</pre></details>
      ))}
    </div>
  );
}

// --- the app ---------------------------------------------------------------------------------

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

function positions(flow) {
  // slots and steps in reading order, for the arrow keys
  const out = [];
  const visit = (lane) => {
    out.push({ type: "slot", lane: lane.path, index: 0 });
    lane.steps.forEach((s, i) => { out.push({ type: "step", path: s.path }); s.lanes.forEach(visit); out.push({ type: "slot", lane: lane.path, index: i + 1 }); });
  };
  flow.lanes.forEach(visit);
  return out;
}

function App() {
  const [registry, setRegistry] = useState(null);
  const [files, setFiles] = useState([]);
  const [name, setName] = useState(null);
  const [doc, setDoc] = useState(null); // the server's state of the file as edited
  const [base, setBase] = useState(null);
  const [edits, setEdits] = useState([]);
  const [future, setFuture] = useState([]);
  const [flowName, setFlowName] = useState(null);
  const [selected, setSelected] = useState(null);
  const [clipboard, setClipboard] = useState(null);
  const [message, setMessage] = useState(null);
  const [run, setRun] = useState(null);
  const [tab, setTab] = useState("properties");
  const searchRef = useRef(null);
  const canvasRef = useRef(null);
  const busy = useRef(Promise.resolve());

  useEffect(() => { api.registry().then(setRegistry); api.files().then((f) => setFiles(f.files)); }, []);
  useEffect(() => {
    if (!name && files.length) setName((files.find((f) => !f.suite && f.flows?.length) || files[0]).name);
  }, [files, name]);
  useEffect(() => {
    if (!name) return;
    api.open(name).then((state) => { setDoc(state); setBase(state.hash); setEdits([]); setFuture([]); setRun(null); setSelected(null);
      setFlowName(state.outline.flows[0]?.name || null); }).catch((e) => setMessage(e.message));
  }, [name]);

  const kindInfo = useCallback((k) => registry?.kinds.find((x) => x.name === k), [registry]);
  const flow = doc?.outline.flows.find((f) => f.name === flowName) || doc?.outline.flows[0] || null;
  const layout = useMemo(() => {
    if (!flow) return { nodes: [], edges: [], ids: new Map() };
    const started = performance.now();
    const ids = new Map();
    stepIds(flow.name, `${flow.name}/steps`, flow.lanes[0].steps, ids);
    flow.lanes[0].sid = `${flow.name}/steps`;
    flow.lanes[1].sid = `${flow.name}/on_error`;
    stepIds(flow.name, `${flow.name}/on_error`, flow.lanes[1].steps, ids);
    const out = layoutFlow(flow);
    window.__designerLayoutMs = performance.now() - started;
    return { ...out, ids };
  }, [flow]);

  const problemsByStep = useMemo(() => {
    const m = new Map();
    for (const p of doc?.problems || []) if (p.step && !m.has(JSON.stringify(p.step))) m.set(JSON.stringify(p.step), p);
    return m;
  }, [doc]);

  const runView = useMemo(() => {
    if (!run) return null;
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
  const change = useCallback((next, nextFuture = []) => {
    busy.current = busy.current.then(() => api.preview(name, base, next).then((state) => {
      setDoc(state); setEdits(next); setFuture(nextFuture); setMessage(null);
    }).catch((e) => setMessage(e.message)));
    return busy.current;
  }, [name, base]);
  const edit = useCallback((op) => change([...edits, op]), [edits, change]);
  const undo = () => edits.length && change(edits.slice(0, -1), [edits[edits.length - 1], ...future]);
  const redo = () => future.length && change([...edits, future[0]], future.slice(1));
  const save = () => api.save(name, base, edits).then((state) => {
    setDoc(state); setBase(state.hash); setEdits([]); setFuture([]); setMessage(`saved ${name}`);
    api.files().then((f) => setFiles(f.files));
  }).catch((e) => setMessage(e.message));

  const insertAt = (lane, index, value) => edit({ op: "insert", path: lane, index, value })
    .then(() => setSelected({ type: "step", path: [...lane, index] }));
  const target = () => {
    if (selected?.type === "slot") return [selected.lane, selected.index];
    if (selected?.type === "step") return [selected.path.slice(0, -1), selected.path[selected.path.length - 1] + 1];
    return flow ? [flow.lanes[0].path, flow.lanes[0].steps.length] : null;
  };
  const newStep = (k) => ({ [k.name]: k.example ?? {} });
  const insertKind = (k) => { const t = target(); if (t) insertAt(t[0], t[1], newStep(k)); canvasRef.current?.focus(); };
  const drop = (transfer, lane, index) => {
    const kind = transfer.getData(DRAG_KIND);
    if (kind) return insertAt(lane, index, newStep(kindInfo(kind)));
    const from = transfer.getData(DRAG_STEP);
    if (from) return edit({ op: "move", from: JSON.parse(from), path: lane, index });
  };

  const onKey = (e) => {
    if (!flow) return;
    const mod = e.ctrlKey || e.metaKey;
    const all = positions(flow);
    const at = all.findIndex((p) => same(p, selected));
    if (e.key === "/") { e.preventDefault(); searchRef.current?.focus(); return; }
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
      e.preventDefault(); setTab("properties");
      setTimeout(() => (document.querySelector("[data-testid=step-form] input") || document.querySelector("[data-testid=step-form] select, [data-testid=step-form] textarea"))?.focus(), 0);
    }
  };

  // a long flow fitted whole would be too small to read: start at its top, readable, instead
  const readable = useCallback((instance) => {
    requestAnimationFrame(() => {
      if (instance.getZoom() < 0.5) instance.setViewport({ x: 24, y: 12, zoom: 0.6 });
    });
  }, []);
  const saveRef = useRef(null);
  saveRef.current = save;
  useEffect(() => {
    const onWindowKey = (e) => {
      if ((e.ctrlKey || e.metaKey) && e.key.toLowerCase() === "s") { e.preventDefault(); saveRef.current(); }
      if (e.key === "Escape" && e.target.closest?.(".side")) canvasRef.current?.focus();
    };
    window.addEventListener("keydown", onWindowKey, true);
    return () => window.removeEventListener("keydown", onWindowKey, true);
  }, []);

  Ctx.current = { selected, select: setSelected, problemsByStep, run: runView, kindInfo, drop, cut: clipboard?.cut };
  // the node components read Ctx; a new data object per change makes React Flow draw them again
  const viewNodes = useMemo(() => layout.nodes.map((n) => ({ ...n, data: { ...n.data, tick: Math.random() } })),
    [layout, selected, problemsByStep, runView, clipboard]);

  const selectedStep = selected?.type === "step" && doc ? findStep(doc.outline, selected.path) : null;
  const suiteFile = name && files.find((f) => f.name === name.replace(/\.ya?ml$/, ".test.yaml")) ? name.replace(/\.ya?ml$/, ".test.yaml") : null;
  const cases = files.find((f) => f.name === suiteFile)?.cases || [];
  const lastRequest = useRef(null);
  const tryIt = (body) => {
    setMessage("running...");
    lastRequest.current = body.request || null;
    return api.tryIt({ file: name, base, edits, ...body }).then((r) => { setRun(r); setMessage(null);
      if (!lastRequest.current) lastRequest.current = r.request.body ? { method: r.request.method, path: r.request.path, json: safeJson(r.request.body) } : { method: r.request.method, path: r.request.path };
    }).catch((e) => setMessage(e.message));
  };
  const saveCase = (caseName) => {
    const expect = { status: run.response.status };
    const json = safeJson(run.response.body);
    if (json !== undefined) expect.json = json; else if (run.response.body) expect.text = run.response.body;
    const request = lastRequest.current || { method: run.request.method, path: run.request.path };
    api.addCase(suiteFile || name.replace(/\.ya?ml$/, ".test.yaml"), { name: caseName, request, expect })
      .then(() => { setMessage(`case "${caseName}" saved`); api.files().then((f) => setFiles(f.files)); }).catch((e) => setMessage(e.message));
  };
  const record = selectedStep && runView ? runView.byPath.get(JSON.stringify(selectedStep.path)) : null;

  const onFormChange = (basePath) => (rel, value) => {
    const path = [...basePath, ...rel];
    edit(value === undefined ? { op: "remove", path } : { op: "set", path, value });
  };
  const onSourceChange = useRef(null);
  onSourceChange.current = (text) => {
    const next = edits.length && edits[edits.length - 1].op === "text" ? edits.slice(0, -1) : edits;
    change([...next, { op: "text", text }]);
  };
  const sourceTimer = useRef(null);
  const debouncedSource = useCallback((text) => { clearTimeout(sourceTimer.current); sourceTimer.current = setTimeout(() => onSourceChange.current(text), 400); }, []);

  if (!registry) return <div className="loading">loading the registry…</div>;
  const endpointKinds = Object.fromEntries(registry.connectors.map((c) => [c.name, c.schema]));
  return (
    <div className="app">
      <header>
        <b>Interlace designer</b>
        <select data-testid="file" value={name || ""} onChange={(e) => setName(e.target.value)}>
          {files.map((f) => <option key={f.name} value={f.name}>{f.name}</option>)}
        </select>
        {doc?.outline.flows.length > 1 ? (
          <select data-testid="flow" value={flowName || ""} onChange={(e) => setFlowName(e.target.value)}>
            {doc.outline.flows.map((f) => <option key={f.name}>{f.name}</option>)}
          </select>) : null}
        <button onClick={() => { const n = prompt("new flow file name", "new-flow.yaml"); if (n) api.create(n).then(() => api.files().then((f) => { setFiles(f.files); setName(n); })).catch((e) => setMessage(e.message)); }}>New file</button>
        <button data-testid="undo" disabled={!edits.length} onClick={undo} title="Ctrl+Z">Undo</button>
        <button data-testid="redo" disabled={!future.length} onClick={redo} title="Ctrl+Shift+Z">Redo</button>
        <button data-testid="save" disabled={!edits.length} onClick={save} title="Ctrl+S">Save{edits.length ? ` (${edits.length})` : ""}</button>
        <span className="status" data-testid="status">{message}</span>
        <span className={`problems-count${doc?.problems.length ? " bad" : ""}`} data-testid="problem-count">{doc ? `${doc.problems.length} problem${doc.problems.length === 1 ? "" : "s"}` : ""}</span>
      </header>
      <main>
        <Palette kinds={registry.kinds} onInsert={insertKind} searchRef={searchRef} />
        <section className="canvas" tabIndex={0} ref={canvasRef} onKeyDown={onKey} data-testid="canvas" aria-label="flow canvas">
          {flow ? (
            <ReactFlow key={`${name}:${flow.name}`} nodes={viewNodes} edges={layout.edges} nodeTypes={nodeTypes} fitView
              fitViewOptions={{ maxZoom: 1, padding: 0.05 }} onInit={readable}
              minZoom={0.05} nodesDraggable={false} nodesConnectable={false} elementsSelectable={false} onlyRenderVisibleElements={layout.order.length > 400}
              onPaneClick={() => setSelected(null)} proOptions={{ hideAttribution: true }} deleteKeyCode={null}>
              <Background gap={24} size={1} /><Controls showInteractive={false} />{layout.order.length <= 80 ? <MiniMap pannable zoomable /> : null}
            </ReactFlow>) : <div className="empty">{doc?.suite ? "A test suite: see its YAML." : doc && !doc.parsed ? "The file does not parse: fix it in the YAML view." : "No flow in this file."}</div>}
          {doc?.problems.length ? (
            <ul className="problem-list" data-testid="problems">{doc.problems.map((p, i) => <li key={i} onClick={() => p.step && setSelected({ type: "step", path: p.step })}>{p.text}</li>)}</ul>) : null}
        </section>
        <aside className="side">
          <nav>{["properties", "try", "endpoints"].map((t) => <button key={t} className={tab === t ? "on" : ""} data-testid={`tab-${t}`} onClick={() => setTab(t)}>{t}</button>)}</nav>
          <div className="panel">
            {tab === "properties" && selectedStep && kindInfo(selectedStep.kind) ? (
              <div className="form" data-testid="step-form">
                <h3>{selectedStep.kind} <small>{kindInfo(selectedStep.kind).summary}</small></h3>
                <SchemaForm key={JSON.stringify(selectedStep.path)} schema={kindInfo(selectedStep.kind).schema} defs={kindInfo(selectedStep.kind).schema.$defs}
                  value={selectedStep.config} onChange={onFormChange([...selectedStep.path, selectedStep.kind])} />
                <SchemaForm schema={{ type: "string", pattern: "^[A-Za-z0-9_.-]+$", description: "A stable name for the step (traces, tests)." }} label="id"
                  value={selectedStep.id ?? undefined} onChange={(_, v) => edit(v === undefined ? { op: "remove", path: [...selectedStep.path, "id"] } : { op: "set", path: [...selectedStep.path, "id"], value: v })} testPrefix="meta" path={["id"]} />
                <p className="hint">Arrows: move between steps and slots · Alt+↑/↓: move the step · Del: delete · Ctrl+C/X/V · Ctrl+Z/Shift+Z · Ctrl+S · / : palette</p>
              </div>
            ) : null}
            {tab === "properties" && selected?.type === "source" && flow ? (
              <div className="form" data-testid="source-form"><h3>source of {flow.name}</h3>
                <SchemaForm schema={registry.schema.$defs.flow.properties.source} defs={registry.schema.$defs} value={flow.source}
                  onChange={onFormChange([...flow.path, "source"])} /></div>) : null}
            {tab === "properties" && !selectedStep && selected?.type !== "source" ? <p className="hint">Select a step (click, or the arrow keys on the canvas) to edit it; drag a step kind from the palette onto a + slot, or select a slot and press Enter in the palette.</p> : null}
            {tab === "try" ? <TryPanel file={name} suiteFile={suiteFile} cases={cases} onRun={tryIt} run={run} onSaveCase={saveCase} selectedRecord={record} /> : null}
            {tab === "endpoints" ? (doc?.outline.endpoints.length ? doc.outline.endpoints.map((ep) => (
              <div className="form" key={ep.name}><h3>{ep.name} <small>{ep.kind}</small></h3>
                {endpointKinds[ep.kind] ? <SchemaForm schema={endpointKinds[ep.kind]} defs={endpointKinds[ep.kind].$defs} value={ep.config} testPrefix={`ep-${ep.name}`}
                  onChange={onFormChange([...ep.path, ep.kind])} /> : <p>unknown connector kind</p>}</div>)) : <p className="hint">No endpoints in this file.</p>) : null}
          </div>
          {doc ? <Source text={doc.text} schema={doc.suite ? registry.suite_schema : registry.schema} problems={doc.problems} fileName={name} onChange={debouncedSource} /> : null}
        </aside>
      </main>
    </div>
  );
}

function safeJson(text) { try { return text ? JSON.parse(text) : undefined; } catch { return undefined; } }

createRoot(document.getElementById("root")).render(<StrictMode><ReactFlowProvider><App /></ReactFlowProvider></StrictMode>);
