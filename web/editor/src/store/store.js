// The editor's one store (zustand): the graph (nodes, edges, the YAML document around them), where it is
// saved, and UI state. Every graph edit is an action here, and undo/redo is zundo's temporal middleware
// over the graph part only (node run states, selection and panels are not history). A node drag is one
// undo step: history pauses while the mouse is down (dragStart/dragStop).
import { create } from 'zustand';
import { temporal } from 'zundo';
import { applyEdgeChanges, applyNodeChanges, addEdge } from '@xyflow/react';
import { edgeFor, isPin } from './yaml.js';

// What undo/redo keeps: nodes without xyflow's transient fields, edges without selection.
const graphPart = (s) => ({
  nodes: s.nodes.map(({ id, type, position, data, measured, zIndex }) => ({ id, type, position, data, measured, ...(zIndex !== undefined ? { zIndex } : {}) })),
  edges: s.edges.map(({ id, source, sourceHandle, target, targetHandle }) => ({ id, source, sourceHandle, target, targetHandle })),
  doc: s.doc,
});
// Two states are the same step when nothing but sizes differ.
const sameGraph = (a, b) => {
  const key = (g) => JSON.stringify([g.nodes.map(({ measured, ...n }) => n), g.edges, g.doc]);
  return key(a) === key(b);
};

export const CLIP_KEY = 'flowrun-clipboard'; // localStorage: copy in one tab, paste in another

const uniqueId = (base, taken) => {
  let b = base.replace(/\.ya?ml$/, '').replace(/[^A-Za-z0-9_]/g, '_').toLowerCase() || 'node';
  if (/^[0-9]/.test(b)) b = `n${b}`;
  let id = b;
  for (let k = 2; taken.has(id); k++) id = `${b}${k}`;
  taken.add(id);
  return id;
};

export const useStore = create(temporal((set, get) => ({
  nodes: [],
  edges: [],
  doc: { flowrun: 1, nodes: {} },
  path: 'untitled.yaml',
  savedPath: null, // the graphs-folder file this graph was loaded from or saved to (null: unsaved)
  runStates: {}, // node id -> {kind, step, steps, message, preview, image}
  errorNode: null,

  setGraph: (g) => set({ nodes: g.nodes, edges: g.edges, doc: g.doc }),
  setPath: (path) => set({ path }),
  setSavedPath: (savedPath) => set({ savedPath }),
  onNodesChange: (changes) => {
    // the first move of a drag can come before onNodeDragStart: take the snapshot before applying it
    if (!dragFrom && changes.some((c) => c.type === 'position' && c.dragging)) dragStart();
    set((s) => ({ nodes: applyNodeChanges(changes, s.nodes) }));
  },
  onEdgesChange: (changes) => set((s) => ({ edges: applyEdgeChanges(changes, s.edges) })),
  connect: (c) => set((s) => ({
    // one link per input: a new link replaces the old one
    edges: addEdge(edgeFor(c.source, c.sourceHandle, c.target, c.targetHandle),
      s.edges.filter((e) => !(e.target === c.target && e.targetHandle === c.targetHandle))),
  })),
  setValue: (id, name, v) => set((s) => ({
    nodes: s.nodes.map((n) => (n.id === id ? { ...n, data: { ...n.data, values: { ...n.data.values, [name]: v } } } : n)),
  })),
  // The pins POST /api/pin made (its "inputs" with state "pinned"), applied as one undo step: a node
  // input's value becomes {file, sha256}; a value bound to $param pins that param's default instead
  // (inside {type, default} when it has that form). Returns how many values changed.
  applyPins: (items) => {
    const pins = items.filter((i) => i.state === 'pinned' && i.sha256);
    if (!pins.length) return 0;
    let changed = 0;
    set((s) => {
      const params = { ...(s.doc.params || {}) };
      for (const p of pins) {
        if (!p.param || !(p.param in params)) continue;
        const d = params[p.param];
        const pin = { file: p.file, sha256: p.sha256 };
        params[p.param] = d && typeof d === 'object' && !isPin(d) ? { ...d, default: pin } : pin;
        changed++;
      }
      const nodes = s.nodes.map((n) => {
        const mine = pins.filter((p) => !p.param && p.node === n.id);
        if (!mine.length) return n;
        const values = { ...n.data.values };
        for (const p of mine) values[p.input] = { file: p.file, sha256: p.sha256 };
        changed += mine.length;
        return { ...n, data: { ...n.data, values } };
      });
      return { nodes, doc: s.doc.params ? { ...s.doc, params } : s.doc };
    });
    return changed;
  },
  setNodeData: (id, patch) => set((s) => ({
    nodes: s.nodes.map((n) => (n.id === id ? { ...n, data: { ...n.data, ...patch } } : n)),
  })),
  // A new node of type `type` (spec: its schema entry) at `position`; returns its id.
  addNode: (type, spec, position) => {
    const taken = new Set(get().nodes.map((n) => n.id));
    const id = uniqueId(type, taken);
    const values = {};
    for (const i of spec.inputs) if (!i.socket && i.default !== undefined) values[i.name] = i.default;
    const node = { id, type: 'fr', position, selected: true, data: { type, values, mode: 'normal' } };
    if (type === 'Group') Object.assign(node, { zIndex: -1, data: { ...node.data, title: 'Group', w: 400, h: 300 } });
    set((s) => ({ nodes: [...s.nodes.map((n) => ({ ...n, selected: false })), node] }));
    return id;
  },
  // Bypass / mute / collapse toggled on the selected nodes (all on when any is off, as ComfyUI).
  toggleSelected: (field, on) => set((s) => {
    const sel = s.nodes.filter((n) => n.selected);
    const all = sel.length > 0 && sel.every((n) => (field === 'collapsed' ? n.data.collapsed : n.data.mode === on));
    return {
      nodes: s.nodes.map((n) => {
        if (!n.selected) return n;
        if (field === 'collapsed') return { ...n, data: { ...n.data, collapsed: !all } };
        return { ...n, data: { ...n.data, mode: all ? 'normal' : on } };
      }),
    };
  }),
  // Copies the selected nodes and the links between them (to localStorage, so another tab can paste).
  copy: () => {
    const { nodes, edges } = get();
    const sel = nodes.filter((n) => n.selected);
    if (!sel.length) return 0;
    const ids = new Set(sel.map((n) => n.id));
    const clip = {
      nodes: sel.map(({ id, position, data }) => ({ id, position, data })),
      edges: edges.filter((e) => ids.has(e.source) && ids.has(e.target)),
    };
    localStorage.setItem(CLIP_KEY, JSON.stringify(clip));
    return sel.length;
  },
  // Pastes the clipboard with new ids, its top-left corner at `at` (flow coordinates).
  paste: (at) => {
    let clip;
    try { clip = JSON.parse(localStorage.getItem(CLIP_KEY) || 'null'); } catch { clip = null; }
    if (!clip || !clip.nodes || !clip.nodes.length) return 0;
    const taken = new Set(get().nodes.map((n) => n.id));
    const map = {};
    for (const n of clip.nodes) map[n.id] = uniqueId(n.id.replace(/\d+$/, ''), taken);
    const x0 = Math.min(...clip.nodes.map((n) => n.position.x));
    const y0 = Math.min(...clip.nodes.map((n) => n.position.y));
    const nodes = clip.nodes.map((n) => ({
      id: map[n.id], type: 'fr', selected: true, data: n.data,
      position: { x: at.x + n.position.x - x0, y: at.y + n.position.y - y0 },
    }));
    const edges = clip.edges.map((e) => edgeFor(map[e.source], e.sourceHandle, map[e.target], e.targetHandle));
    set((s) => ({ nodes: [...s.nodes.map((n) => ({ ...n, selected: false })), ...nodes], edges: [...s.edges, ...edges] }));
    return nodes.length;
  },
  setRunState: (id, patch) => set((s) => ({ runStates: { ...s.runStates, [id]: patch && { ...(s.runStates[id] || {}), ...patch } } })),
  setRunStates: (f) => set((s) => ({ runStates: f(s.runStates) })),
  setErrorNode: (errorNode) => set({ errorNode }),
}), { partialize: graphPart, equality: sameGraph, limit: 200 }));

// A drag is one history step: pause while dragging, then record the move from where it started.
let dragFrom = null;
export function dragStart() {
  if (dragFrom) return;
  dragFrom = graphPart(useStore.getState());
  useStore.temporal.getState().pause();
}
export function dragStop() {
  if (!dragFrom) return;
  const now = graphPart(useStore.getState());
  useStore.setState(dragFrom);
  useStore.temporal.getState().resume();
  useStore.setState(now);
  dragFrom = null;
}
export const undo = () => useStore.temporal.getState().undo();
export const redo = () => useStore.temporal.getState().redo();
export const clearHistory = () => useStore.temporal.getState().clear();
// Where a node was when the current drag started (null when no drag).
export function dragOrigin(id) {
  const n = dragFrom && dragFrom.nodes.find((x) => x.id === id);
  return n ? n.position : null;
}
