// Workflow YAML <-> the editor's nodes and edges. The YAML is the file the CLI runs (docs: graph format);
// node positions live in each node's `ui: {x, y}`. Top-level keys the editor does not edit (description,
// params, inputs, outputs) are kept as they were.
import YAML from 'yaml';

export const PRIMITIVES = new Set(['INT', 'FLOAT', 'BOOL', 'STRING', 'ENUM']);

// A model pin {file: NAME, sha256: HEX} (docs/graph-format.md, "Pins"): an input's value or a param's.
export const isPin = (v) => !!v && typeof v === 'object' && typeof v.file === 'string' && typeof v.sha256 === 'string';
// The file a model input's value names (a pin's file, else the value itself).
export const pinFile = (v) => (isPin(v) ? v.file : v);

// YAML text to JS, as YAML.parse (throws on the first error), except that every `sha256:` value is kept
// as written: a pin's hash is hex text, and a plain 0123456789 or 12345e6789 would become a number.
export function parseYaml(text) {
  const d = YAML.parseDocument(text);
  if (d.errors.length) throw d.errors[0];
  YAML.visit(d, {
    Pair(_, pair) {
      const v = pair.value;
      if (YAML.isScalar(pair.key) && pair.key.value === 'sha256' && YAML.isScalar(v) && typeof v.value !== 'string')
        v.value = v.source !== undefined ? String(v.source) : String(v.value);
    },
  });
  return d.toJS();
}

// The interface of a subgraph file used as a node: declared inputs and outputs, typed from the
// schema of the nodes its outputs come from.
export function subgraphSpec(name, text, schema) {
  const doc = parseYaml(text) || {};
  const inputs = Object.entries(doc.inputs || {}).map(([n, d]) => {
    const type = String((d && d.type) || 'STRING');
    const socket = !PRIMITIVES.has(type);
    return { name: n, type, socket, required: d.default === undefined && socket, default: d.default, help: d.help };
  });
  const outputs = Object.entries(doc.outputs || {}).map(([n, ref]) => {
    const [src, out] = String(ref).split('.');
    const srcType = doc.nodes && doc.nodes[src] && doc.nodes[src].type;
    const spec = schema[srcType];
    const o = spec && (out ? spec.outputs.find((x) => x.name === out) : spec.outputs[0]);
    return { name: n, type: o ? o.type : '*' };
  });
  return { name, category: 'subgraph', help: doc.description || '', inputs, outputs, subgraph: true };
}

// Parses YAML into {doc, nodes, edges}. specOf(type) gives a node spec (schema or subgraph).
// relayout: ignore the file's positions (an imported workflow's) and place nodes in columns by depth, each
// column's nodes stacked by their estimated height, so none overlap.
export function fromYaml(text, specOf, { relayout = false } = {}) {
  const doc = parseYaml(text) || {};
  const nodes = [];
  const edges = [];
  const ids = Object.keys(doc.nodes || {});
  const depth = {};
  const depthOf = (id, seen = new Set()) => {
    if (depth[id] !== undefined) return depth[id];
    if (seen.has(id)) return 0;
    seen.add(id);
    let d = 0;
    const n = doc.nodes[id] || {};
    for (const v of Object.values(n.inputs || {}))
      if (typeof v === 'string' && ids.includes(v.split('.')[0]) && !v.startsWith('$'))
        d = Math.max(d, depthOf(v.split('.')[0], seen) + 1);
    return (depth[id] = d);
  };
  const rows = {};
  for (const id of ids) {
    const n = doc.nodes[id] || {};
    const spec = specOf(n.type);
    const values = {};
    for (const [k, v] of Object.entries(n.inputs || {})) {
      const inSpec = spec && spec.inputs.find((i) => i.name === k);
      if (inSpec && inSpec.socket && typeof v === 'string' && !v.startsWith('$')) {
        const [src, out] = v.split('.');
        const srcSpec = doc.nodes[src] && specOf(doc.nodes[src].type);
        const outName = out || (srcSpec && srcSpec.outputs[0] && srcSpec.outputs[0].name) || 'out';
        edges.push(edgeFor(src, outName, id, k));
      } else {
        values[k] = v;
      }
    }
    const d = depthOf(id);
    const y = rows[d] === undefined ? 40 : rows[d];
    const lines = spec ? spec.inputs.filter((i) => !i.hidden).length + Math.max(1, spec.outputs.length) : 4;
    rows[d] = y + 70 + 22 * lines + 30;
    const position = n.ui && !relayout ? { x: n.ui.x, y: n.ui.y } : { x: 40 + d * 320, y };
    nodes.push({ id, type: 'fr', position, data: { type: n.type, values, state: null } });
  }
  return { doc, nodes, edges };
}

export function edgeFor(source, sourceHandle, target, targetHandle) {
  return { id: `${source}.${sourceHandle}->${target}.${targetHandle}`, source, sourceHandle, target, targetHandle };
}

// Editor-only node types: a reroute point (a link passes through it; the YAML links straight through) and
// a group (a titled box that moves the nodes inside it; not in the YAML).
export const REROUTE = 'Reroute';
export const GROUP = 'Group';
export const EDITOR_SPECS = {
  [REROUTE]: { name: REROUTE, category: 'utils', help: 'a reroute point: a link passes through it', comfy: ['Reroute'], editorOnly: true,
    inputs: [{ name: 'in', type: '*', socket: true }], outputs: [{ name: 'out', type: '*' }] },
  [GROUP]: { name: GROUP, category: 'utils', help: 'a titled box; moving it moves the nodes inside', comfy: ['Group'], editorOnly: true,
    inputs: [], outputs: [] },
};

// The graph the engine runs (reroutes passed through, groups left out): muted nodes left out with every node that takes a link from a left-out node
// (what only they feed), and bypassed nodes rewired: a link from a bypassed node's output comes from the
// source of its first linked input of the same type instead (through chains of bypassed nodes), so the
// YAML has no bypassed node. A consumer whose type finds no such input is left out as for a mute.
export function effectiveGraph(nodes, edges, specOf) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const isReroute = (id) => byId.get(id) && byId.get(id).data.type === REROUTE;
  const mode = (id) => (isReroute(id) ? 'bypass' : (byId.get(id) && byId.get(id).data.mode) || 'normal');
  const outType = (n, h) => {
    const s = specOf(n.data.type);
    const o = s && s.outputs.find((x) => x.name === h);
    return o && o.type;
  };
  const inType = (n, h) => {
    const s = specOf(n.data.type);
    const i = s && s.inputs.find((x) => x.name === h);
    return i && i.type;
  };
  // source of a link from (id, handle), through bypassed nodes; null when it cannot pass through
  const resolve = (id, handle, seen = new Set()) => {
    if (mode(id) !== 'bypass') return { source: id, sourceHandle: handle };
    if (seen.has(id)) return null;
    seen.add(id);
    const n = byId.get(id);
    const t = outType(n, handle);
    const through = edges.find((e) => e.target === id && (isReroute(id) || inType(n, e.targetHandle) === t));
    return through ? resolve(through.source, through.sourceHandle, seen) : null;
  };
  const out = [];
  for (const e of edges) {
    if (mode(e.target) === 'bypass') continue;
    const r = resolve(e.source, e.sourceHandle);
    out.push(r ? { ...e, ...r } : { ...e, source: null });
  }
  const dropped = new Set(nodes.filter((n) => n.data.mode === 'mute' || n.data.mode === 'bypass' || n.data.type === REROUTE || n.data.type === GROUP).map((n) => n.id));
  for (let changed = true; changed; ) {
    changed = false;
    for (const e of out)
      if ((e.source === null || (dropped.has(e.source) && mode(e.source) !== 'bypass')) && !dropped.has(e.target)) {
        dropped.add(e.target);
        changed = true;
      }
  }
  return {
    nodes: nodes.filter((n) => !dropped.has(n.id)),
    edges: out.filter((e) => e.source !== null && !dropped.has(e.source) && !dropped.has(e.target)),
  };
}

// Back to YAML: the original document with its nodes replaced by the editor's (as effectiveGraph runs them).
export function toYaml(doc, allNodes, allEdges, specOf) {
  const { nodes, edges } = effectiveGraph(allNodes, allEdges, specOf);
  const out = { ...doc, flowrun: doc.flowrun || 1 };
  const ynodes = {};
  for (const n of nodes) {
    const spec = specOf(n.data.type);
    const inputs = {};
    for (const [k, v] of Object.entries(n.data.values || {})) {
      if (v === undefined || v === '') continue;
      inputs[k] = v;
    }
    for (const e of edges.filter((e) => e.target === n.id)) {
      const src = nodes.find((x) => x.id === e.source);
      const srcSpec = src && specOf(src.data.type);
      const first = srcSpec && srcSpec.outputs[0] && srcSpec.outputs[0].name;
      inputs[e.targetHandle] = e.sourceHandle === first ? e.source : `${e.source}.${e.sourceHandle}`;
    }
    // Inputs in the spec's order, for a stable, readable file.
    const ordered = {};
    for (const i of (spec && spec.inputs) || []) if (i.name in inputs) ordered[i.name] = inputs[i.name];
    for (const k of Object.keys(inputs)) if (!(k in ordered)) ordered[k] = inputs[k];
    ynodes[n.id] = { type: n.data.type, inputs: ordered, ui: { x: Math.round(n.position.x), y: Math.round(n.position.y) } };
  }
  out.nodes = ynodes;
  const d = new YAML.Document(out);
  // Flow style for small maps keeps each node a few lines, like the hand-written graphs.
  YAML.visit(d, {
    Pair(_, pair) {
      const k = pair.key && pair.key.value;
      if ((k === 'ui' || k === 'inputs') && YAML.isMap(pair.value)) pair.value.flow = true;
    },
  });
  for (const p of Object.values((d.get('params', true) || { items: [] }).items || []))
    if (YAML.isPair(p) && YAML.isMap(p.value)) p.value.flow = true;
  return d.toString({ lineWidth: 0 });
}
