// Undo and redo across saves. The history is a list of the file's states (its text and what
// the server made of it); a save marks one of them as the text on disk instead of starting a
// new history. The edits sent to the server are always relative to the text on disk:
//   - a state reached by edits since the last save keeps those edits (patches: everything the
//     user did not touch stays byte for byte);
//   - a state from before the save (or after a reload) is reached by giving its whole text,
//     which is exactly the text it had, byte for byte.

/**
 * @typedef {{ op: string, [key: string]: any }} Edit
 * @typedef {{ text: string, ops: Edit[] | null, state: any, typed?: boolean }} Entry
 * @typedef {{ entries: Entry[], at: number, saved: number, typed?: boolean }} History
 *   (`typed`: the last change was the echo of typing in the YAML view, which is already ahead)
 */

/** @param {any} state the server's state of a file just opened @returns {History} */
export function opened(state) {
  return { entries: [{ text: state.text, ops: [], state }], at: 0, saved: 0 };
}

/** The edits that turn the text on disk into entry `index`. @param {History} h @param {number} [index] */
export function editsOf(h, index = h.at) {
  if (index === h.saved) return [];
  const entry = h.entries[index];
  return entry.ops ?? [{ op: "text", text: entry.text }];
}

/** @param {History} h */
export const dirty = (h) => h.at !== h.saved && h.entries[h.at].text !== h.entries[h.saved].text;

/**
 * A new state after the current one (what was undone past it is dropped, as in any editor).
 * A run of typing in the YAML view is one state: `typed` replaces the state it typed before.
 * @param {History} h @param {Edit[]} ops @param {any} state @param {boolean} [typed]
 * @returns {History}
 */
export function pushed(h, ops, state, typed = false) {
  const entry = { text: state.text, ops, state, typed };
  const replace = typed && h.entries[h.at].typed && h.at !== h.saved && h.at === h.entries.length - 1;
  const keep = h.entries.slice(0, replace ? h.at : h.at + 1);
  return { entries: [...keep, entry], at: keep.length, saved: h.saved, typed };
}

/** @param {History} h @param {number} to @returns {History} */
export const moved = (h, to) => ({ ...h, at: Math.max(0, Math.min(h.entries.length - 1, to)), typed: false });

/**
 * After a save of the current state: it is now the text on disk; the others stay reachable by
 * their text. @param {History} h @param {any} state the server's answer to the save
 * @returns {History}
 */
export function savedAt(h, state) {
  /** @type {Entry[]} */
  const entries = h.entries.map((e, i) => (i === h.at ? { text: state.text, ops: [], state } : { ...e, ops: null, typed: false }));
  return { entries, at: h.at, saved: h.at, typed: false };
}

/**
 * The file changed on disk (another tab, another editor): its new text becomes the saved
 * state, and `rebased` (the user's edits applied again to it, if they applied) the current
 * one. Everything before stays reachable by undo.
 * @param {History} h @param {any} disk @param {{ ops: Edit[], state: any } | null} rebased
 * @returns {History}
 */
export function reloaded(h, disk, rebased) {
  /** @type {Entry[]} */
  const entries = h.entries.slice(0, h.at + 1).map((e) => ({ ...e, ops: null, typed: false }));
  entries.push({ text: disk.text, ops: [], state: disk });
  const saved = entries.length - 1;
  if (rebased) entries.push({ text: rebased.state.text, ops: rebased.ops, state: rebased.state });
  return { entries, at: entries.length - 1, saved, typed: false };
}
