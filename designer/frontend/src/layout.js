// Lane layout: a flow is a tree of step lists (lanes), so it is laid out as one: the steps of
// a lane top to bottom, the lanes of a step (choice's branches, try's catch, ...) side by
// side inside it, the flow's error handler beside its steps. Linear in the number of steps
// (a 200-step flow lays out in a few milliseconds) and stable: an edit moves only what
// follows it. Every lane gets drop slots before, between and after its steps.

export const STEP_W = 220;
export const STEP_H = 54;
const GAP = 30; // between two steps of a lane: the drop slot sits in it
const LANE_PAD = 14;
const LANE_LABEL = 22;
const HEADER = 46;

// The step id the compiler gives (engine/compiler.py): what try-it runs are recorded under.
export function stepIds(owner, listId, steps, out) {
  steps.forEach((step, index) => {
    const id = step.id ? `${owner}/${step.id}` : `${listId}[${index}]`;
    out.set(id, step.path);
    step.sid = id;
    for (const lane of step.lanes) {
      const rel = lane.path.slice(step.path.length + 1);
      lane.sid = id + rel.map((k) => (typeof k === "number" ? `[${k}]` : `/${k}`)).join("");
      stepIds(owner, lane.sid, lane.steps, out);
    }
  });
}

function measureLane(lane) {
  let w = STEP_W;
  let h = LANE_LABEL + GAP;
  for (const step of lane.steps) {
    measureStep(step);
    w = Math.max(w, step.w);
    h += step.h + GAP;
  }
  lane.w = w + 2 * LANE_PAD;
  lane.h = h + LANE_PAD;
}

function measureStep(step) {
  if (!step.lanes.length) {
    step.w = STEP_W;
    step.h = STEP_H;
    return;
  }
  let w = 0;
  let h = 0;
  for (const lane of step.lanes) {
    measureLane(lane);
    w += lane.w + LANE_PAD;
    h = Math.max(h, lane.h);
  }
  step.w = Math.max(STEP_W, w + LANE_PAD);
  step.h = HEADER + h + LANE_PAD;
}

const key = (path) => JSON.stringify(path);

// Everything is drawn into one plain layer of absolutely placed boxes (left/top, no transform
// per box, no SVG edges): a pan then moves one composited layer instead of repainting and
// re-layerising hundreds of transformed nodes. The items are in paint order: a lane before
// its slots and steps, a step before its own lanes.
function placeLane(lane, x, y, out) {
  out.items.push({ type: "lane", id: `lane:${key(lane.path)}`, x, y, w: lane.w, h: lane.h, lane });
  let cy = y + LANE_LABEL;
  const cx = x + LANE_PAD;
  const inner = lane.w - 2 * LANE_PAD;
  if (lane.steps.length > 1) {
    // one wire down the lane's middle, from its first step to its last, behind the steps
    const first = cy + GAP;
    let last = first;
    lane.steps.forEach((step, i) => { if (i < lane.steps.length - 1) last += step.h + GAP; });
    out.items.push({ type: "wire", id: `wire:${key(lane.path)}`, x: cx + inner / 2 - 1, y: first, w: 2, h: last - first });
  }
  const slot = (index, sy) => out.items.push({ type: "slot", id: `slot:${key(lane.path)}:${index}`,
    x: cx, y: sy, w: inner, h: GAP - 8, lane: lane.path, index });
  slot(0, cy + 4);
  cy += GAP;
  lane.steps.forEach((step, index) => {
    const sx = cx + (inner - step.w) / 2;
    placeStep(step, sx, cy, out);
    cy += step.h;
    slot(index + 1, cy + 4);
    cy += GAP;
  });
}

function placeStep(step, x, y, out) {
  out.items.push({ type: "step", id: `step:${key(step.path)}`, x, y, w: step.w, h: step.h, step });
  out.order.push(step);
  let lx = x + LANE_PAD;
  for (const lane of step.lanes) {
    placeLane(lane, lx, y + HEADER, out);
    lx += lane.w + LANE_PAD;
  }
}

// The boxes of a flow or a sequence (a "subject": its lanes, and a head box: the flow's
// source or the sequence's name and parameters), its size, and its steps in reading order.
export function layoutSubject(subject) {
  const out = { items: [], order: [], width: 0, height: 0 };
  const head = STEP_W + 2 * LANE_PAD;
  subject.lanes.forEach(measureLane);
  const middle = Math.max(head, subject.lanes[0]?.w || 0) / 2;
  out.items.push({ type: "head", id: "head", x: middle - head / 2, y: 0, w: head, h: STEP_H, subject });
  if (subject.lanes[0]?.steps.length) {
    out.items.push({ type: "wire", id: "wire:head", x: middle - 1, y: STEP_H, w: 2, h: 24 + LANE_LABEL + GAP });
  }
  let x = 0;
  for (const lane of subject.lanes) {
    placeLane(lane, x, STEP_H + 24, out);
    out.height = Math.max(out.height, STEP_H + 24 + lane.h);
    x += lane.w + 60;
  }
  out.width = Math.max(head, x - 60);
  return out;
}

export function flattenSlots(flow) {
  // every place a step can go, in reading order: [{lane, index}]
  const slots = [];
  const visit = (lane) => {
    slots.push({ lane: lane.path, index: 0 });
    lane.steps.forEach((step, i) => {
      step.lanes.forEach(visit);
      slots.push({ lane: lane.path, index: i + 1 });
    });
  };
  flow.lanes.forEach(visit);
  return slots;
}
