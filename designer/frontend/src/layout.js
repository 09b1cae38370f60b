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

function placeLane(lane, x, y, out, depth) {
  out.nodes.push({ id: `lane:${key(lane.path)}`, type: "lane", position: { x, y }, zIndex: depth * 2,
    data: { lane }, style: { width: lane.w, height: lane.h }, selectable: false, draggable: false });
  let cy = y + LANE_LABEL;
  const cx = x + LANE_PAD;
  const inner = lane.w - 2 * LANE_PAD;
  const slot = (index, sy) => out.nodes.push({ id: `slot:${key(lane.path)}:${index}`, type: "slot",
    position: { x: cx, y: sy }, zIndex: depth * 2 + 1, draggable: false, selectable: false,
    data: { lane: lane.path, index, laneKey: lane.key }, style: { width: inner, height: GAP - 8 } });
  slot(0, cy + 4);
  cy += GAP;
  let previous = null;
  lane.steps.forEach((step, index) => {
    const sx = cx + (inner - step.w) / 2;
    placeStep(step, sx, cy, out, depth + 1);
    if (previous) out.edges.push({ id: `e:${previous}->${key(step.path)}`, source: previous, target: `step:${key(step.path)}`, type: "straight", zIndex: depth * 2 + 1 });
    previous = `step:${key(step.path)}`;
    cy += step.h;
    slot(index + 1, cy + 4);
    cy += GAP;
  });
}

function placeStep(step, x, y, out, depth) {
  out.nodes.push({ id: `step:${key(step.path)}`, type: "step", position: { x, y }, zIndex: depth * 2,
    data: { step }, style: { width: step.w, height: step.h }, draggable: false });
  out.order.push(step);
  let lx = x + LANE_PAD;
  for (const lane of step.lanes) {
    placeLane(lane, lx, y + HEADER, out, depth + 1);
    lx += lane.w + LANE_PAD;
  }
}

// nodes and edges for React Flow, and the steps in reading order (for the keyboard)
export function layoutFlow(flow) {
  const out = { nodes: [], edges: [], order: [] };
  out.nodes.push({ id: "source", type: "source", position: { x: 0, y: 0 }, data: { flow }, draggable: false,
    style: { width: STEP_W + 2 * LANE_PAD, height: STEP_H } });
  let x = 0;
  for (const lane of flow.lanes) {
    measureLane(lane);
    placeLane(lane, x, STEP_H + 24, out, 0);
    x += lane.w + 60;
  }
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
