// The file's YAML beside the drawing: CodeMirror 6 with its YAML mode, completion of the keys
// the schema allows where the cursor is, and the loader's problems as diagnostics.
import { useEffect, useRef } from "react";
import { EditorView, lineNumbers, highlightActiveLine, keymap, drawSelection } from "@codemirror/view";
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
      if (dash && lead < indent) path.unshift(0);
      if (m && col < indent) path.unshift(m[1]);
      indent = dash ? lead : col;
      if (indent === 0) break;
    }
  }
  return path;
}

function schemaAt(root, path) {
  const defs = root.$defs;
  let candidates = [root];
  for (const part of path) {
    const next = [];
    for (const c of candidates) {
      const s = resolve(c, defs);
      const alts = [...(s.anyOf || []), ...(s.oneOf || [])].map((a) => resolve(a, defs));
      for (const x of [s, ...alts]) {
        if (typeof part === "number") { if (x.items) next.push(x.items); }
        else if (x.properties?.[part]) next.push(x.properties[part]);
        else if (x.additionalProperties && typeof x.additionalProperties === "object") next.push(x.additionalProperties);
      }
    }
    candidates = next;
  }
  const keys = new Map();
  for (const c of candidates) {
    const s = resolve(c, defs);
    for (const x of [s, ...[...(s.anyOf || []), ...(s.oneOf || [])].map((a) => resolve(a, defs))]) {
      for (const [k, v] of Object.entries(x.properties || {})) if (!keys.has(k)) keys.set(k, resolve(v, defs).description || x.description || "");
      if (x.items) for (const [k, v] of Object.entries(resolve(x.items, defs).properties || {})) if (!keys.has(k)) keys.set(k, v.description || "");
    }
  }
  return keys;
}

export function Source({ text, schema, problems, onChange, fileName }) {
  const host = useRef(null);
  const view = useRef(null);
  const problemsRef = useRef(problems);
  const changeRef = useRef(onChange);
  changeRef.current = onChange;
  problemsRef.current = problems;
  const lintCompartment = useRef(new Compartment());
  const external = useRef(false);

  useEffect(() => {
    const complete = (context) => {
      const word = context.matchBefore(/[\w$.-]*/);
      const line = context.state.doc.lineAt(context.pos);
      if (line.text.slice(0, context.pos - line.from).includes(":")) return null;
      const keys = schemaAt(schema, keyPath(context.state.doc, line.number));
      if (!keys.size) return null;
      return { from: word.from, options: [...keys].map(([label, info]) => ({ label, type: "property", apply: `${label}: `, info })) };
    };
    const lint = (v) => problemsRef.current.filter((p) => p.file === fileName && p.line <= v.state.doc.lines).map((p) => {
      const line = v.state.doc.line(p.line);
      const from = Math.min(line.from + p.column - 1, line.to);
      return { from, to: Math.max(from, line.to), severity: "error", message: p.message };
    });
    view.current = new EditorView({
      parent: host.current,
      state: EditorState.create({
        doc: text,
        extensions: [lineNumbers(), history(), drawSelection(), highlightActiveLine(), indentOnInput(), bracketMatching(),
          syntaxHighlighting(defaultHighlightStyle), keymap.of([...defaultKeymap, ...historyKeymap, ...completionKeymap, indentWithTab]),
          EditorView.domEventHandlers({ keydown: (e) => e.stopPropagation() }), yaml(), autocompletion({ override: [complete] }), lintGutter(),
          lintCompartment.current.of(linter(lint, { delay: 100 })),
          EditorView.updateListener.of((u) => { if (u.docChanged && !external.current) changeRef.current(u.state.doc.toString()); })],
      }),
    });
    return () => view.current.destroy();
  }, [fileName]);

  useEffect(() => {
    const v = view.current;
    if (v && v.state.doc.toString() !== text) {
      external.current = true;
      v.dispatch({ changes: { from: 0, to: v.state.doc.length, insert: text } });
      external.current = false;
    }
  }, [text]);
  useEffect(() => { if (view.current) forceLinting(view.current); }, [problems]);

  return <div className="source" data-testid="source" ref={host} />;
}
