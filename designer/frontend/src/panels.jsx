// The side panels: the palette of step kinds, try-it and a step's recorded message.
import { useEffect, useState } from "react";
import { DRAG_KIND } from "./Canvas.jsx";
import { SchemaForm } from "./SchemaForm.jsx";

// --- the palette -----------------------------------------------------------------------------

export function Palette({ kinds, onInsert, searchRef }) {
  const [query, setQuery] = useState("");
  const [active, setActive] = useState(0);
  const shown = kinds.filter((k) => (k.name + " " + k.summary + " " + k.category).toLowerCase().includes(query.toLowerCase()));
  const groups = {};
  shown.forEach((k) => (groups[k.category] ||= []).push(k));
  // Enter takes the best match: the kind named so, then names starting so, then the rest
  const q = query.toLowerCase();
  const rank = (k) => (!q ? 0 : k.name === q ? 0 : k.name.startsWith(q) ? 1 : k.name.includes(q) ? 2 : 3);
  const ordered = Object.keys(groups).sort().flatMap((g) => groups[g]).map((k, i) => [k, i])
    .sort(([a, i], [b, j]) => rank(a) - rank(b) || i - j).map(([k]) => k);
  return (
    <aside className="palette" aria-label="step kinds">
      <input ref={searchRef} data-testid="palette-search" placeholder="search steps  ( / )" value={query}
        onChange={(e) => { setQuery(e.target.value); setActive(0); }}
        onKeyDown={(e) => {
          e.stopPropagation();
          if (e.key === "ArrowDown") { setActive((a) => Math.min(a + 1, ordered.length - 1)); e.preventDefault(); }
          if (e.key === "ArrowUp") { setActive((a) => Math.max(a - 1, 0)); e.preventDefault(); }
          if (e.key === "Enter" && ordered[active]) { onInsert(ordered[active]); e.preventDefault(); }
          if (e.key === "Escape") e.currentTarget.blur();
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

// requestSchema: a flow-test case's request in the suite schema (the registry's): the fields
// below that it declares (client) are drawn from it, as the step forms are
export function TryPanel({ file, suiteFile, cases, onRun, run, onSaveCase, selectedRecord, requestSchema }) {
  const [caseIndex, setCaseIndex] = useState(cases.length ? "0" : "");
  const [method, setMethod] = useState("POST");
  const [path, setPath] = useState("/");
  const [body, setBody] = useState("{}");
  const [client, setClient] = useState(undefined);
  const [mocks, setMocks] = useState(Boolean(suiteFile));
  const [caseName, setCaseName] = useState("");
  useEffect(() => setCaseIndex(cases.length ? "0" : ""), [file, cases.length]);
  const go = () => {
    if (caseIndex !== "") onRun({ suite: suiteFile, case: Number(caseIndex), mocks });
    else {
      let request = { method, path };
      if (client !== undefined) request.client = client;
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
          {requestSchema?.properties?.client ? (
            <SchemaForm schema={requestSchema.properties.client} value={client} label="client" path={["client"]}
              testPrefix="try" onChange={(_, value) => setClient(value)} />) : null}
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

export function Record({ record }) {
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

