// The file's YAML beside the drawing: CodeMirror 6 with its YAML mode, completion of the keys
// the schema allows where the cursor is and of the values (the schema's enums and booleans, the
// folder's endpoint, sequence and operation names, step kinds), the schema's description of a
// key on hover, and the loader's problems as diagnostics.
import { useEffect, useRef } from "react";
import { EditorView, lineNumbers, highlightActiveLine, keymap, drawSelection, hoverTooltip } from "@codemirror/view";
import { EditorState, Compartment } from "@codemirror/state";
import { history, defaultKeymap, historyKeymap, indentWithTab } from "@codemirror/commands";
import { syntaxHighlighting, defaultHighlightStyle, bracketMatching, indentOnInput } from "@codemirror/language";
import { completionKeymap } from "@codemirror/autocomplete";
import { yaml } from "@codemirror/lang-yaml";
import { autocompletion } from "@codemirror/autocomplete";
import { linter, lintGutter, forceLinting } from "@codemirror/lint";
import { resolve } from "./SchemaForm.jsx";

// the keys above the cursor, by indentation: ["flows", "get-order", "steps", 0, "call"]
function keyPath(doc, lineNumber) {
  const path = [];
  let indent = Infinity;
  for (let n = lineNumber; n >= 1; n--) {
    const text = doc.line(n).text;
    if (!text.trim() || text.trim().startsWith("#")) continue;
    const lead = text.length - text.trimStart().length;
    const dash = text.trimStart().startsWith("- ");
    const col = dash ? lead + 2 : lead;
    if (n === lineNumber) { indent = col; if (dash) { path.unshift(0); indent = lead; } continue; }
    if (col < indent || (dash && lead < indent)) {
      const m = text.trimStart().replace(/^- /, "").match(/^([\w$.-]+):/);
      if (m && col < indent) path.unshift(m[1]);
      if (dash && lead < indent) path.unshift(0); // the item holds the key: [..., 0, key]
      indent = dash ? lead : col;
      if (indent === 0) break;
    }
  }
  return path;
}

// the schemas that can describe the value at `path` (every alternative of an anyOf / oneOf)
function candidatesAt(root, path) {
  const defs = root.$defs;
  const spread = (c) => { const s = resolve(c, defs); return [s, ...[...(s.anyOf || []), ...(s.oneOf || [])].map((a) => resolve(a, defs))]; };
  let candidates = spread(root);
  for (const part of path) {
    const next = [];
    for (const x of candidates) {
      if (typeof part === "number") { if (x.items) next.push(x.items); }
      else if (x.properties?.[part]) next.push(x.properties[part]);
      else if (x.additionalProperties && typeof x.additionalProperties === "object") next.push(x.additionalProperties);
    }
    candidates = next.flatMap(spread);
  }
  return candidates;
}

// the keys a mapping at `path` may have, each with its description
function schemaAt(root, path) {
  const defs = root.$defs;
  const keys = new Map();
  for (const x of candidatesAt(root, path)) {
    for (const [k, v] of Object.entries(x.properties || {})) if (!keys.has(k)) keys.set(k, resolve(v, defs).description || x.description || "");
    if (x.items) for (const [k, v] of Object.entries(resolve(x.items, defs).properties || {})) if (!keys.has(k)) keys.set(k, v.description || "");
  }
  return keys;
}

// the schemas of the key `key` of the mapping at `path`
function propertyAt(root, path, key) {
  const defs = root.$defs;
  return candidatesAt(root, path).flatMap((x) => {
    const sub = x.properties?.[key] ?? (x.additionalProperties && typeof x.additionalProperties === "object" ? x.additionalProperties : null);
    if (!sub) return [];
    const s = resolve(sub, defs);
    return [s, ...[...(s.anyOf || []), ...(s.oneOf || [])].map((a) => resolve(a, defs))];
  });
}

const quoteIfNeeded = (v) => (typeof v === "string" && (/^[\s]|[:#{}[\],&*?|<>=!%@`'"]|\s$/.test(v) || ["true", "false", "null", "yes", "no", "~", ""].includes(v) || /^[-+]?[\d.]/.test(v)) ? JSON.stringify(v) : String(v));

/** The values the YAML view offers after `key: ` at `path`: the schema's enum and booleans, and
 * the names this folder declares where a value names an endpoint, a sequence or an operation. */
export function valueOptions(root, path, key, names) {
  const schemas = propertyAt(root, path, key);
  const options = new Map();
  const add = (label, detail, info) => { if (!options.has(label)) options.set(label, { label, detail, info }); };
  for (const s of schemas) {
    for (const v of s.enum || []) add(quoteIfNeeded(v), "enum", s.description || "");
    if (s.const !== undefined) add(quoteIfNeeded(s.const), "const", s.description || "");
    const types = Array.isArray(s.type) ? s.type : [s.type];
    if (types.includes("boolean")) { add("true", "boolean", s.description || ""); add("false", "boolean", s.description || ""); }
  }
  const parent = path.filter((p) => typeof p === "string").at(-1);
  if (key === "endpoint" || key === "endpoints") names.endpoints.forEach((n) => add(quoteIfNeeded(n), "endpoint", "an endpoint declared in this folder"));
  if (key === "sequence" || (key === "name" && parent === "sequence")) names.sequences.forEach((n) => add(quoteIfNeeded(n), "sequence", "a sequence declared in this folder"));
  if (key === "operation") {
    for (const c of names.connectors || []) for (const [op, o] of Object.entries(c.operations || {})) add(op, `${c.name} operation`, o.summary || "");
  }
  return [...options.values()];
}

/** What the schema says of the key `key` at `path`, for the hover tooltip. */
export function keyDoc(root, path, key, kinds) {
  const kind = kinds.find((k) => k.name === key);
  const inSteps = typeof path.at(-1) === "number";
  if (kind && inSteps) return { title: `${key} (step, ${kind.category})`, text: kind.summary };
  const schemas = propertyAt(root, path, key);
  if (!schemas.length) return null;
  const s = schemas.find((x) => x.description) || schemas[0];
  const types = [...new Set(schemas.flatMap((x) => (x.enum ? ["enum"] : Array.isArray(x.type) ? x.type : x.type ? [x.type] : [])))];
  const enums = [...new Set(schemas.flatMap((x) => x.enum || []))];
  const required = candidatesAt(root, path).some((x) => (x.required || []).includes(key));
  return { title: `${key}${types.length ? `: ${types.join(" | ")}` : ""}${required ? " (required)" : ""}`,
    text: [s.description || "", enums.length ? `one of: ${enums.join(", ")}` : "", s.default !== undefined ? `default: ${JSON.stringify(s.default)}` : ""].filter(Boolean).join("\n") };
}

/**
 * @param {{ text: string, schema: any, problems: any[], onChange: (text: string) => void, fileName: string,
 *   names: { endpoints: string[], sequences: string[], kinds: any[], connectors?: any[] }, echo: boolean }} props
 *   (`echo`: `text` is what this view typed a moment ago: the view may be ahead of it, keep it)
 */
export function Source({ text, schema, problems, onChange, fileName, names, echo }) {
  const host = useRef(null);
  const view = useRef(null);
  const problemsRef = useRef(problems);
  const changeRef = useRef(onChange);
  const namesRef = useRef(names);
  changeRef.current = onChange;
  problemsRef.current = problems;
  namesRef.current = names;
  const lintCompartment = useRef(new Compartment());
  const external = useRef(false);

  useEffect(() => {
    const complete = (context) => {
      const line = context.state.doc.lineAt(context.pos);
      const before = line.text.slice(0, context.pos - line.from);
      const path = keyPath(context.state.doc, line.number);
      const value = before.match(/^\s*(?:- )?([\w$.-]+):\s+([^{}[\]#]*)$/);
      if (value) {
        // after "key: ": the values the schema and the folder allow there
        const options = valueOptions(schema, path, value[1], namesRef.current);
        if (!options.length) return null;
        return { from: context.pos - value[2].length, options: options.map((o) => ({ label: o.label, type: "enum", detail: o.detail, info: o.info })) };
      }
      if (before.includes(":")) return null;
      const word = context.matchBefore(/[\w$.-]*/);
      const keys = schemaAt(schema, path);
      if (!keys.size) return null;
      const kinds = new Map(namesRef.current.kinds.map((k) => [k.name, k]));
      const inSteps = typeof path.at(-1) === "number";
      return { from: word.from, options: [...keys].map(([label, info]) => {
        const kind = inSteps ? kinds.get(label) : null;
        return kind ? { label, type: "class", detail: `step · ${kind.category}`, apply: `${label}: `, info: kind.summary, boost: 1 }
          : { label, type: "property", apply: `${label}: `, info };
      }) };
    };
    // what the schema says of the key under the pointer
    const hover = hoverTooltip((v, pos) => {
      const line = v.state.doc.lineAt(pos);
      const m = line.text.match(/^(\s*(?:- )?)([\w$.-]+):/);
      if (!m) return null;
      const from = line.from + m[1].length;
      const to = from + m[2].length;
      if (pos < from || pos > to) return null;
      const doc = keyDoc(schema, keyPath(v.state.doc, line.number), m[2], namesRef.current.kinds);
      if (!doc) return null;
      return { pos: from, end: to, above: true, create: () => {
        const dom = document.createElement("div");
        dom.className = "key-doc";
        dom.dataset.testid = "hover-doc";
        const title = document.createElement("b");
        title.textContent = doc.title;
        const body = document.createElement("div");
        body.textContent = doc.text;
        dom.append(title, body);
        return { dom };
      } };
    }, { hoverTime: 250 });
    const lint = (v) => problemsRef.current.filter((p) => p.file === fileName && p.line <= v.state.doc.lines).map((p) => {
      const line = v.state.doc.line(p.line);
      const from = Math.min(line.from + p.column - 1, line.to);
      return { from, to: Math.max(from, line.to), severity: /** @type {const} */ ("error"), message: p.message };
    });
    view.current = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: text,
        extensions: [lineNumbers(), history(), drawSelection(), highlightActiveLine(), indentOnInput(), bracketMatching(),
          syntaxHighlighting(defaultHighlightStyle), keymap.of([...defaultKeymap, ...historyKeymap, ...completionKeymap, indentWithTab]),
          EditorView.domEventHandlers({ keydown: (e) => e.stopPropagation() }), yaml(), autocompletion({ override: [complete] }), hover, lintGutter(),
          lintCompartment.current.of(linter(lint, { delay: 100 })),
          EditorView.updateListener.of((u) => { if (u.docChanged && !external.current) changeRef.current(u.state.doc.toString()); })],
      }),
    });
    /** @type {any} */ (host.current).editorView = view.current; // for the browser tests
    return () => view.current.destroy();
  }, [fileName]);

  useEffect(() => {
    const v = view.current;
    if (v && !echo && v.state.doc.toString() !== text) {
      external.current = true;
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: text } });
      external.current = false;
    }
  }, [text]);
  useEffect(() => { if (view.current) forceLinting(view.current); }, [problems]);

  return <div className="source" data-testid="source" ref={host} />;
}
