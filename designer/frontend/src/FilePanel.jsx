// What a file holds besides steps: its namespaces, new flows, endpoints and sequences added to
// it, and a template sequence's parameters. Every change is an edit the server applies to the
// text as a patch (a key added to a mapping, a value set, a key removed).
import { useState } from "react";
import { resolve } from "./SchemaForm.jsx";

const NAME = /^[A-Za-z0-9_.-]+$/;
const stop = (e) => e.stopPropagation();

/** prefix -> URI rows; a prefix is added, its URI changed, or the row removed */
export function Namespaces({ namespaces, description, onEdit }) {
  const [prefix, setPrefix] = useState("");
  const [uri, setUri] = useState("");
  const rows = Object.entries(namespaces || {});
  const add = () => {
    if (!NAME.test(prefix) || !uri) return;
    onEdit(namespaces ? { op: "set", path: ["namespaces", prefix], value: uri }
      : { op: "set", path: ["namespaces"], value: { [prefix]: uri } });
    setPrefix(""); setUri("");
  };
  return (
    <div className="form" data-testid="namespaces-form">
      <h3>namespaces <small>{description}</small></h3>
      {rows.map(([p, u]) => (
        <div className="row" key={p}>
          <code>{p}</code>
          <input data-testid={`ns-${p}`} defaultValue={String(u)} onKeyDown={(e) => {
            stop(e);
            if (e.key === "Enter") onEdit({ op: "set", path: ["namespaces", p], value: e.currentTarget.value });
          }} onBlur={(e) => { if (e.currentTarget.value !== u) onEdit({ op: "set", path: ["namespaces", p], value: e.currentTarget.value }); }} />
          <button title="remove" onClick={() => onEdit({ op: "remove", path: ["namespaces", p] })}>×</button>
        </div>))}
      <div className="row">
        <input data-testid="ns-new-prefix" placeholder="prefix" value={prefix} onChange={(e) => setPrefix(e.target.value)} onKeyDown={stop} />
        <input data-testid="ns-new-uri" placeholder="URI" value={uri} onChange={(e) => setUri(e.target.value)}
          onKeyDown={(e) => { stop(e); if (e.key === "Enter") add(); }} />
        <button data-testid="ns-add" disabled={!NAME.test(prefix) || !uri} onClick={add}>Add</button>
      </div>
    </div>
  );
}

/** a new flow, endpoint or sequence in the open file, started from a small value that loads */
export function AddToFile({ outline, connectors, onAdd }) {
  const [what, setWhat] = useState("flow");
  const [name, setName] = useState("");
  const [kind, setKind] = useState(connectors.find((c) => c.name === "http")?.name || connectors[0]?.name || "");
  const taken = new Set([...outline.flows.map((f) => `flow:${f.name}`), ...outline.endpoints.map((e) => `endpoint:${e.name}`),
    ...outline.sequences.map((s) => `sequence:${s.name}`)]);
  const problem = !name ? null : !NAME.test(name) ? "letters, digits, _ . - only" : taken.has(`${what}:${name}`) ? `this file has a ${what} ${name}` : null;
  const add = () => {
    if (!name || problem) return;
    let value;
    if (what === "flow") value = { source: { http: { method: "POST", path: `/${name}` } }, steps: [{ log: "received ${payload}" }, { respond: { status: 200 } }] };
    else if (what === "sequence") value = [{ log: `in ${name}` }];
    else value = { [kind]: exampleSettings(connectors.find((c) => c.name === kind)) };
    onAdd(what, name, value);
    setName("");
  };
  return (
    <div className="form" data-testid="add-form">
      <h3>add to this file</h3>
      <div className="row">
        <select data-testid="add-what" value={what} onChange={(e) => setWhat(e.target.value)} onKeyDown={stop}>
          <option value="flow">flow</option><option value="endpoint">endpoint</option><option value="sequence">sequence</option>
        </select>
        {what === "endpoint" ? (
          <select data-testid="add-kind" value={kind} onChange={(e) => setKind(e.target.value)} onKeyDown={stop}>
            {connectors.map((c) => <option key={c.name} value={c.name}>{c.name}</option>)}
          </select>) : null}
        <input data-testid="add-name" placeholder="name" value={name} onChange={(e) => setName(e.target.value)}
          onKeyDown={(e) => { stop(e); if (e.key === "Enter") add(); }} />
        <button data-testid="add-go" disabled={!name || Boolean(problem)} onClick={add}>Add</button>
      </div>
      {problem ? <span className="error">{problem}</span> : null}
    </div>
  );
}

/** the required settings of a connector, each from its default or an empty string */
function exampleSettings(connector) {
  const schema = resolve(connector?.schema || {}, connector?.schema?.$defs);
  const out = {};
  // the required keys, or those of the first way to satisfy it ({anyOf: [{required: [url]}, ...]})
  for (const key of schema.required || (schema.anyOf || schema.oneOf || [])[0]?.required || []) {
    const sub = resolve(schema.properties?.[key] || {}, connector.schema.$defs);
    out[key] = sub.default ?? (sub.type === "integer" || sub.type === "number" ? 0 : sub.type === "boolean" ? false : "");
  }
  return out;
}

/** a template sequence's parameters: name, type, default, description */
export function Params({ sequence, types, onEdit }) {
  const [name, setName] = useState("");
  const base = [...sequence.path, "params"];
  const params = sequence.params || {};
  const add = () => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || params[name]) return;
    onEdit(sequence.params ? { op: "set", path: [...base, name], value: { type: "string" } }
      : { op: "set", path: base, value: { [name]: { type: "string" } } });
    setName("");
  };
  return (
    <div className="form" data-testid="params-form">
      <h3>parameters of {sequence.name} <small>read inside as {"${params.NAME}"}; without a default, required</small></h3>
      {Object.entries(params).map(([p, spec]) => (
        <div className="row param" key={p}>
          <code>{p}</code>
          <select data-testid={`param-${p}-type`} value={spec?.type || ""} onKeyDown={stop}
            onChange={(e) => onEdit(e.target.value ? { op: "set", path: [...base, p, "type"], value: e.target.value }
              : { op: "remove", path: [...base, p, "type"] })}>
            <option value="">any</option>{types.filter((t) => t !== "any").map((t) => <option key={t}>{t}</option>)}
          </select>
          <input data-testid={`param-${p}-default`} placeholder="default (JSON or text)"
            defaultValue={spec && "default" in spec ? JSON.stringify(spec.default) : ""} onKeyDown={stop}
            onBlur={(e) => {
              const text = e.currentTarget.value.trim();
              if (!text) { if (spec && "default" in spec) onEdit({ op: "remove", path: [...base, p, "default"] }); return; }
              let value; try { value = JSON.parse(text); } catch { value = text; }
              if (JSON.stringify(value) !== JSON.stringify(spec?.default)) onEdit({ op: "set", path: [...base, p, "default"], value });
            }} />
          <button title="remove" onClick={() => onEdit({ op: "remove", path: [...base, p] })}>×</button>
        </div>))}
      <div className="row">
        <input data-testid="param-new" placeholder="new parameter" value={name} onChange={(e) => setName(e.target.value)}
          onKeyDown={(e) => { stop(e); if (e.key === "Enter") add(); }} />
        <button data-testid="param-add" onClick={add} disabled={!name}>Add</button>
      </div>
    </div>
  );
}
