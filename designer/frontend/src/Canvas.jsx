// The canvas: one React Flow node holding the whole drawing as plain, absolutely placed boxes.
//
// Why one node: with a React Flow node per step (and an SVG edge per link) a 200-step flow was
// ~3,000 elements each under its own CSS transform, and a pan re-rasterised the visible area on
// every pointer move (about 32 ms a frame in software: 20-23 fps). Here the boxes are placed
// with left/top inside one layer that stays composited (will-change), the links are plain divs,
// no box clips its text (CSS overflow would make each box a paint chunk to re-layerise), and
// while the view moves the drawing ignores the pointer (no hit tests): a pan only moves an
// already painted layer. Each box is memoised on the few values it shows, so a selection or a
// try-it run re-renders only the boxes that changed. Measured by tests/browser/test_designer.py.
import { createContext, memo, useContext, useRef, useState } from "react";
import { ReactFlow, Controls } from "@xyflow/react";

/** @typedef {{ select: (s: any) => void, drop: (t: DataTransfer, lane: any[], index: number) => void,
 *   openSequence: (name: string) => void, kindInfo: (k: string) => any }} CanvasActions */

/** What the boxes show that is not the layout: selection, problems, a try-it run, the cut step. */
export const CanvasState = createContext(/** @type {any} */ (null));

export const DRAG_KIND = "application/x-interlace-kind";
export const DRAG_STEP = "application/x-interlace-step";

const box = (item) => ({ left: item.x, top: item.y, width: item.w, height: item.h });

// Text is cut to its box here rather than by CSS overflow: an overflow clip per box is a paint
// chunk of its own, and a few hundred of them make every frame of a pan re-layerise (measured:
// 36 fps with the clips, 51-56 without, on the 200-step flow). ~6.2 px a character at 11 px.
export function fit(text, width, px = 6.2) {
  const room = Math.max(4, Math.floor(width / px));
  const s = text == null ? "" : String(text);
  return s.length <= room ? s : `${s.slice(0, room - 1)}…`;
}

/** The name a `sequence` step calls (`sequence: name` or `sequence: {name: ..., with: ...}`). */
export function calledSequence(step) {
  if (step.kind !== "sequence") return null;
  if (typeof step.config === "string") return step.config;
  return typeof step.config?.name === "string" ? step.config.name : null;
}

/** @param {{ item: any, selected: boolean, problem: any, record: any, cut: boolean, category: string, actions: CanvasActions }} props */
function StepBoxView({ item, selected, problem, record, cut, category, actions }) {
  const { step } = item;
  const called = calledSequence(step);
  const cls = ["step", "nodrag", "nopan", step.lanes.length ? "container" : "", selected ? "selected" : "",
    problem ? "has-problem" : "", record ? (record.error ? "run-error" : "ran") : "", cut ? "cut" : "",
    `cat-${category}`].join(" ");
  return (
    <div className={cls} style={box(item)} data-testid={`step-${step.path.join(".")}`} data-kind={step.kind} draggable
      onDragStart={(e) => { e.dataTransfer.setData(DRAG_STEP, JSON.stringify(step.path)); e.dataTransfer.effectAllowed = "move"; }}
      onClick={(e) => { e.stopPropagation(); actions.select({ type: "step", path: step.path }); }}>
      <div className="step-head">
        <span className={`kind cat-${category}`}>{step.kind || "?"}</span>
        {step.id ? <span className="sid">#{fit(step.id, item.w - 120)}</span> : null}
        {record ? <span className="ms" data-testid="ms">{record.ms} ms</span> : null}
        {called ? (
          <button className="open-sequence" data-testid="open-sequence" title={`open the sequence ${called}`}
            onClick={(e) => { e.stopPropagation(); actions.openSequence(called); }}>open ›</button>) : null}
      </div>
      <div className="summary" title={step.summary}>{fit(step.summary, item.w - 24)}</div>
      {problem ? <div className="problem" title={problem.text}>{fit(problem.text, item.w - 24)}</div> : null}
      {record?.error ? <div className="problem" title={record.error.message}>{fit(`raised: ${record.error.message}`, item.w - 24)}</div> : null}
    </div>
  );
}
const StepBox = memo(StepBoxView);

/** @param {{ item: any, taken: boolean }} props */
function LaneBoxView({ item, taken }) {
  return (
    <div className={`lane${taken ? " taken" : ""}`} style={box(item)} data-testid={`lane-${item.lane.path.join(".")}`}>
      <span className="lane-label" title={item.lane.label}>{fit(item.lane.label, item.w - 14)}</span>
    </div>
  );
}
const LaneBox = memo(LaneBoxView);

/** @param {{ item: any, selected: boolean, actions: CanvasActions }} props */
function SlotBoxView({ item, selected, actions }) {
  const [over, setOver] = useState(false);
  return (
    <div className={`slot nopan${over ? " over" : ""}${selected ? " selected" : ""}`} style={box(item)}
      data-testid={`slot-${item.lane.join(".")}-${item.index}`}
      onClick={(e) => { e.stopPropagation(); actions.select({ type: "slot", lane: item.lane, index: item.index }); }}
      onDragOver={(e) => { e.preventDefault(); if (!over) setOver(true); }} onDragLeave={() => setOver(false)}
      onDrop={(e) => { e.preventDefault(); setOver(false); actions.drop(e.dataTransfer, item.lane, item.index); }}>
      <span>+</span>
    </div>
  );
}
const SlotBox = memo(SlotBoxView);

/** @param {{ item: any, selected: boolean, actions: CanvasActions }} props */
function HeadBoxView({ item, selected, actions }) {
  const { subject } = item;
  let detail;
  if (subject.type === "flow") {
    const http = subject.source?.http || {};
    detail = http.path !== undefined ? `${(http.methods || [http.method || "POST"]).join(",")} ${http.path}`
      : Object.keys(subject.source || {}).join(", ");
  } else {
    const params = Object.keys(subject.params || {});
    detail = params.length ? `sequence (${params.join(", ")})` : "sequence";
  }
  return (
    <div className={`source-node nopan${selected ? " selected" : ""}`} style={box(item)}
      data-testid={subject.type === "flow" ? "flow-source" : "sequence-head"}
      onClick={(e) => { e.stopPropagation(); actions.select({ type: "head" }); }}>
      <b>{fit(subject.name, item.w / 2)}</b> <span className="summary">{fit(detail, item.w / 2 - 20)}</span>
    </div>
  );
}
const HeadBox = memo(HeadBoxView);

function Diagram({ data }) {
  const state = useContext(CanvasState);
  const { layout } = data;
  const { actions, selected, problemsByStep, run, cut } = state;
  const selectedStep = selected?.type === "step" ? JSON.stringify(selected.path) : null;
  const selectedSlot = selected?.type === "slot" ? `${JSON.stringify(selected.lane)}:${selected.index}` : null;
  const cutKey = cut ? JSON.stringify(cut) : null;
  return (
    <div className="diagram" style={{ width: layout.width, height: layout.height }}
      onClick={() => actions.select(null)}>
      {layout.items.map((item) => {
        switch (item.type) {
          case "lane": return <LaneBox key={item.id} item={item} taken={Boolean(run?.lanes.has(item.lane.sid))} />;
          case "wire": return <div key={item.id} className="wire" style={box(item)} />;
          case "slot": return <SlotBox key={item.id} item={item} actions={actions}
            selected={selectedSlot === `${JSON.stringify(item.lane)}:${item.index}`} />;
          case "head": return <HeadBox key={item.id} item={item} actions={actions} selected={selected?.type === "head"} />;
          default: {
            const key = JSON.stringify(item.step.path);
            return <StepBox key={item.id} item={item} actions={actions} selected={selectedStep === key}
              problem={problemsByStep.get(key)} record={run?.byPath.get(key)} cut={cutKey === key}
              category={actions.kindInfo(item.step.kind)?.category || "unknown"} />;
          }
        }
      })}
    </div>
  );
}

const nodeTypes = { diagram: memo(Diagram) };

// a long flow fitted whole would be too small to read: start at its top, readable, instead
function readable(instance) {
  requestAnimationFrame(() => {
    if (instance.getZoom() < 0.5) instance.setViewport({ x: 24, y: 12, zoom: 0.6 });
  });
}

export function Canvas({ layout, viewKey, onPaneClick, hostRef }) {
  const nodes = [{ id: "diagram", type: "diagram", position: { x: 0, y: 0 }, data: { layout }, draggable: false,
    selectable: false, width: layout.width, height: layout.height, style: { width: layout.width, height: layout.height } }];
  // The drawing stays one composited layer, so a pan never waits for it to be painted again
  // (switching the layer on at each pan start cost a 0.4-0.5 s first frame). A zoom is drawn
  // from that layer scaled, then painted afresh at its new scale once the zoom ends.
  const zoomAtStart = useRef(1);
  const moving = (on, viewport) => {
    const host = hostRef.current;
    if (!host) return;
    host.classList.toggle("moving", on);
    if (on) { zoomAtStart.current = viewport?.zoom; return; }
    if (viewport && viewport.zoom !== zoomAtStart.current) {
      host.classList.remove("composited");
      requestAnimationFrame(() => requestAnimationFrame(() => host.classList.add("composited")));
    }
  };
  return (
    <ReactFlow key={viewKey} nodes={nodes} edges={[]} nodeTypes={nodeTypes} fitView fitViewOptions={{ maxZoom: 1, padding: 0.05 }}
      onInit={readable} minZoom={0.05} nodesDraggable={false} nodesConnectable={false} elementsSelectable={false}
      onMoveStart={(_, v) => moving(true, v)} onMoveEnd={(_, v) => moving(false, v)}
      onPaneClick={onPaneClick} proOptions={{ hideAttribution: true }} deleteKeyCode={null}>
      {/* no dotted Background: its pattern is re-rasterised on every frame of a pan (measured:
          38-41 fps with it, 56-58 without); the pane is a plain colour instead */}
      <Controls showInteractive={false} />
    </ReactFlow>
  );
}
