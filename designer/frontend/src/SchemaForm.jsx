// Forms generated from the registry's JSON Schema: every field the schema declares, typed
// inputs, enums as choices, nested objects as fieldsets, required fields marked, checked as
// the user types. Nested step lists are not fields: they are lanes on the canvas.
import { useEffect, useState } from "react";

export function resolve(schema, defs) {
  let s = schema || {};
  for (let i = 0; i < 8 && s.$ref; i++) {
    const name = s.$ref.replace("#/$defs/", "");
    s = { ...(defs?.[name] || {}), ...Object.fromEntries(Object.entries(s).filter(([k]) => k !== "$ref")) };
  }
  return s;
}

const isStepsRef = (s) => s && s.$ref === "#/$defs/steps";

function typesOf(s) {
  if (s.enum) return ["enum"];
  if (Array.isArray(s.type)) return s.type;
  if (s.type) return [s.type];
  if (s.properties) return ["object"];
  return ["string"];
}

export function validate(s, value, required) {
  if (value === undefined || value === "") return required ? "required" : null;
  if (s.enum && !s.enum.includes(value)) return `one of ${s.enum.join(", ")}`;
  const types = typesOf(s);
  const ok = types.some((t) => t === "enum" || (t === "string" && typeof value === "string")
    || (t === "integer" && Number.isInteger(value)) || (t === "number" && typeof value === "number")
    || (t === "boolean" && typeof value === "boolean") || (t === "array" && Array.isArray(value))
    || (t === "object" && value && typeof value === "object" && !Array.isArray(value)) || (t === "null" && value === null));
  if (!ok) return `expected ${types.join(" or ")}`;
  if (typeof value === "string" && s.pattern && !new RegExp(s.pattern).test(value)) return `must match ${s.pattern}`;
  if (typeof value === "string" && (value.match(/\$\{/g) || []).length !== (value.match(/\}/g) || []).length
      && value.includes("${")) return "an unclosed ${...} expression";
  if (typeof value === "number" && s.minimum !== undefined && value < s.minimum) return `at least ${s.minimum}`;
  return null;
}

// ${...} shown apart from the literal text
export function Highlighted({ text }) {
  if (typeof text !== "string" || !text.includes("${")) return null;
  const parts = text.split(/(\$\{[^}]*\}?)/g).filter(Boolean);
  return (
    <div className="expr-preview" aria-hidden="true">
      {parts.map((p, i) => (p.startsWith("${") ? <span key={i} className="expr">{p}</span> : <span key={i}>{p}</span>))}
    </div>
  );
}

function parseTyped(text, types) {
  if (text === "") return undefined;
  if ((types.includes("integer") || types.includes("number")) && /^-?\d+(\.\d+)?$/.test(text)) return Number(text);
  if (types.includes("boolean") && (text === "true" || text === "false")) return text === "true";
  return text;
}

function TextField({ label, s, value, required, onCommit, testId }) {
  const types = typesOf(s);
  const [draft, setDraft] = useState(value === undefined ? "" : String(value));
  useEffect(() => setDraft(value === undefined ? "" : String(value)), [value]);
  const typed = parseTyped(draft, types);
  const error = validate(s, typed, required);
  const commit = () => {
    if (typed !== value && !(error && error !== "required")) onCommit(typed);
  };
  return (
    <label className={`field${error ? " invalid" : ""}`}>
      <span className="label">{label}{required ? " *" : ""}</span>
      <input data-testid={testId} value={draft} placeholder={s.default !== undefined ? String(s.default) : ""}
        className={draft.includes("${") ? "has-expr" : ""} title={s.description || ""}
        onChange={(e) => setDraft(e.target.value)} onBlur={commit}
        onKeyDown={(e) => { if (e.key === "Enter") { e.preventDefault(); commit(); } e.stopPropagation(); }} />
      <Highlighted text={draft} />
      {error ? <span className="error">{error}</span> : s.description ? <span className="hint">{s.description}</span> : null}
    </label>
  );
}

function JsonField({ label, s, value, required, onCommit, testId }) {
  const [draft, setDraft] = useState(value === undefined ? "" : JSON.stringify(value));
  useEffect(() => setDraft(value === undefined ? "" : JSON.stringify(value)), [value]);
  let parsed;
  let error = null;
  try { parsed = draft.trim() === "" ? undefined : JSON.parse(draft); } catch { error = "not JSON"; }
  if (!error) error = validate(s, parsed, required);
  const commit = () => { if (!error || error === "required") onCommit(parsed); };
  return (
    <label className={`field${error ? " invalid" : ""}`}>
      <span className="label">{label}{required ? " *" : ""} <small>(JSON)</small></span>
      <textarea data-testid={testId} rows={2} value={draft} onChange={(e) => setDraft(e.target.value)} onBlur={commit}
        onKeyDown={(e) => e.stopPropagation()} title={s.description || ""} />
      {error ? <span className="error">{error}</span> : s.description ? <span className="hint">{s.description}</span> : null}
    </label>
  );
}

export function SchemaForm({ schema, defs = undefined, value, onChange, path = [], label = null, required = false, testPrefix = "field" }) {
  const s = resolve(schema, defs);
  const testId = `${testPrefix}-${path.join(".") || "value"}`;
  // anyOf / oneOf entries that only constrain an object's own properties ({required: [url]} or
  // {required: [urls]}) are not alternatives to choose from: the object's form holds them all
  const constraintsOnly = (list) => s.properties && list.every((a) => !a.type && !a.properties && !a.enum && !a.$ref && !a.items && a.const === undefined);
  const alternatives = [s.oneOf, s.anyOf].find((list) => list && !constraintsOnly(list));
  if (alternatives) {
    const resolved = alternatives.map((a) => resolve(a, defs));
    const matches = resolved.findIndex((a) => !validate(a, value, false));
    const chosen = matches < 0 ? 0 : matches;
    const alt = resolved[chosen];
    return (
      <fieldset className="alt">
        {label ? <legend>{label}{required ? " *" : ""}</legend> : null}
        <select value={chosen} onChange={(e) => onChange(path, typesOf(resolved[+e.target.value])[0] === "object" ? {} : "")}
          onKeyDown={(e) => e.stopPropagation()}>
          {resolved.map((a, i) => <option key={i} value={i}>{a.title || a.description || typesOf(a).join("|")}</option>)}
        </select>
        <SchemaForm schema={alt} defs={defs} value={value} onChange={onChange} path={path} testPrefix={testPrefix} />
      </fieldset>
    );
  }
  const types = typesOf(s);
  if (s.enum) {
    return (
      <label className="field">
        <span className="label">{label}{required ? " *" : ""}</span>
        <select data-testid={testId} value={value === undefined ? "" : String(value)} title={s.description || ""}
          onKeyDown={(e) => e.stopPropagation()}
          onChange={(e) => onChange(path, e.target.value === "" ? undefined : s.enum.find((v) => String(v) === e.target.value))}>
          <option value="">{required ? "(choose)" : "(default)"}</option>
          {s.enum.map((v) => <option key={String(v)} value={String(v)}>{String(v)}</option>)}
        </select>
        {s.description ? <span className="hint">{s.description}</span> : null}
      </label>
    );
  }
  if (types.includes("object") && s.properties && (value === undefined || (value && typeof value === "object" && !Array.isArray(value)))) {
    const req = new Set(s.required || []);
    return (
      <fieldset>
        {label ? <legend>{label}{required ? " *" : ""}</legend> : null}
        {Object.entries(s.properties).filter(([, sub]) => !isStepsRef(sub)).map(([name, sub]) => (
          <SchemaForm key={name} schema={sub} defs={defs} value={value?.[name]} label={name} required={req.has(name)}
            path={[...path, name]} testPrefix={testPrefix}
            onChange={(p, v) => (value === undefined && v !== undefined && path.length
              ? onChange(path, { [name]: v }) : onChange(p, v))} />
        ))}
      </fieldset>
    );
  }
  if (types.length === 1 && types[0] === "boolean") {
    return (
      <label className="field check">
        <input type="checkbox" data-testid={testId} checked={value === true} onKeyDown={(e) => e.stopPropagation()}
          onChange={(e) => onChange(path, e.target.checked)} />
        <span className="label">{label}</span>
        {s.description ? <span className="hint">{s.description}</span> : null}
      </label>
    );
  }
  if (types.includes("array") || types.includes("object") || (value !== null && typeof value === "object")) {
    return <JsonField label={label} s={s} value={value} required={required} testId={testId} onCommit={(v) => onChange(path, v)} />;
  }
  return <TextField label={label ?? "value"} s={s} value={value} required={required} testId={testId} onCommit={(v) => onChange(path, v)} />;
}
