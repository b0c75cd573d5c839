// The editor's YAML writer (web/editor/src/store/yaml.js) on hand-made graphs: what a bypassed, muted or
// reroute node becomes in the YAML the CLI runs. Expected texts are written out by hand from the rules
// (docs: README's editor section): bypass links consumers to the source of the node's first linked input
// of the same type, through chains; mute leaves out the node and every node that takes a link from a
// left-out node; a reroute passes its one input through; a group is not in the YAML.
//   node tests/web/graph_yaml.mjs   (from anywhere; needs web/editor's node_modules for 'yaml')
import { effectiveGraph, toYaml, fromYaml, EDITOR_SPECS } from '../../web/editor/src/store/yaml.js';

const specs = {
  Load: { inputs: [{ name: 'path', type: 'STRING', socket: false }], outputs: [{ name: 'image', type: 'IMAGE' }, { name: 'mask', type: 'MASK' }] },
  Blur: { inputs: [{ name: 'image', type: 'IMAGE', socket: true }, { name: 'radius', type: 'INT', socket: false }], outputs: [{ name: 'image', type: 'IMAGE' }] },
  Grow: { inputs: [{ name: 'mask', type: 'MASK', socket: true }], outputs: [{ name: 'mask', type: 'MASK' }] },
  ToMask: { inputs: [{ name: 'image', type: 'IMAGE', socket: true }], outputs: [{ name: 'mask', type: 'MASK' }] },
  Save: { inputs: [{ name: 'images', type: 'IMAGE', socket: true }], outputs: [] },
  SaveMask: { inputs: [{ name: 'mask', type: 'MASK', socket: true }], outputs: [] },
  ...EDITOR_SPECS,
};
const specOf = (t) => specs[t];
const node = (id, type, mode = 'normal', values = {}) => ({ id, type: 'fr', position: { x: 0, y: 0 }, data: { type, values, mode } });
const edge = (s, sh, t, th) => ({ id: `${s}.${sh}->${t}.${th}`, source: s, sourceHandle: sh, target: t, targetHandle: th });
let fails = 0;
const check = (name, got, want) => {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g === w) console.log(`ok   ${name}`);
  else { console.log(`FAIL ${name}\n  got  ${g}\n  want ${w}`); fails++; }
};
const summary = (g) => ({
  nodes: g.nodes.map((n) => n.id).sort(),
  edges: g.edges.map((e) => `${e.source}.${e.sourceHandle}->${e.target}.${e.targetHandle}`).sort(),
});

// load -> b1 -> b2 -> save, and load.mask -> grow -> savemask
const base = [node('load', 'Load', 'normal', { path: 'a.png' }), node('b1', 'Blur'), node('b2', 'Blur'), node('save', 'Save'), node('grow', 'Grow'), node('savemask', 'SaveMask')];
const links = [edge('load', 'image', 'b1', 'image'), edge('b1', 'image', 'b2', 'image'), edge('b2', 'image', 'save', 'images'),
  edge('load', 'mask', 'grow', 'mask'), edge('grow', 'mask', 'savemask', 'mask')];
const withMode = (ms) => base.map((n) => (ms[n.id] ? { ...n, data: { ...n.data, mode: ms[n.id] } } : n));

check('nothing bypassed: the graph as drawn', summary(effectiveGraph(base, links, specOf)),
  { nodes: ['b1', 'b2', 'grow', 'load', 'save', 'savemask'], edges: ['b1.image->b2.image', 'b2.image->save.images', 'grow.mask->savemask.mask', 'load.image->b1.image', 'load.mask->grow.mask'] });
check('a chain of two bypassed blurs: save takes load.image', summary(effectiveGraph(withMode({ b1: 'bypass', b2: 'bypass' }), links, specOf)),
  { nodes: ['grow', 'load', 'save', 'savemask'], edges: ['grow.mask->savemask.mask', 'load.image->save.images', 'load.mask->grow.mask'] });
check('muted b1: b1, b2 and save left out, the mask branch stays', summary(effectiveGraph(withMode({ b1: 'mute' }), links, specOf)),
  { nodes: ['grow', 'load', 'savemask'], edges: ['grow.mask->savemask.mask', 'load.mask->grow.mask'] });
// a bypassed node whose output type none of its inputs has: its consumers are left out
const tm = [node('load', 'Load'), node('tomask', 'ToMask', 'bypass'), node('sm', 'SaveMask'), node('save', 'Save')];
const tml = [edge('load', 'image', 'tomask', 'image'), edge('tomask', 'mask', 'sm', 'mask'), edge('load', 'image', 'save', 'images')];
check('bypass without an input of the output type: its consumer left out', summary(effectiveGraph(tm, tml, specOf)),
  { nodes: ['load', 'save'], edges: ['load.image->save.images'] });
// reroute points (two in a row) and a group
const rr = [node('load', 'Load'), node('r1', 'Reroute'), node('r2', 'Reroute'), node('save', 'Save'), node('g', 'Group')];
const rrl = [edge('load', 'image', 'r1', 'in'), edge('r1', 'out', 'r2', 'in'), edge('r2', 'out', 'save', 'images')];
check('reroutes pass through, a group is left out', summary(effectiveGraph(rr, rrl, specOf)), { nodes: ['load', 'save'], edges: ['load.image->save.images'] });

// the YAML text: bypassed b1 and b2, values kept, first-output links written as the bare node id
const text = toYaml({ flowrun: 1 }, withMode({ b1: 'bypass', b2: 'bypass', grow: 'mute' }), links, specOf);
const doc = fromYaml(text, specOf).doc;
check('YAML nodes and inputs', Object.fromEntries(Object.entries(doc.nodes).map(([k, v]) => [k, [v.type, v.inputs]])),
  { load: ['Load', { path: 'a.png' }], save: ['Save', { images: 'load' }] });
// and back: the YAML loads into the same two nodes and one link
const back = fromYaml(text, specOf);
check('YAML read back', summary(back), { nodes: ['load', 'save'], edges: ['load.image->save.images'] });

// model pins {file, sha256} (a node input's value and a param's default) survive YAML -> editor -> YAML
const pinSpecs = { Ckpt: { inputs: [{ name: 'ckpt_name', type: 'STRING', socket: false, model_file: true }], outputs: [{ name: 'model', type: 'MODEL' }] } };
const pinText = 'flowrun: 1\nparams:\n  m: {type: STRING, default: {file: b.safetensors, sha256: 0123456789}}\nnodes:\n'
  + '  a: {type: Ckpt, inputs: {ckpt_name: {file: a.safetensors, sha256: ABCDEF0123}}, ui: {x: 1, y: 2}}\n'
  + '  b: {type: Ckpt, inputs: {ckpt_name: $m}, ui: {x: 3, y: 4}}\n';
const pg = fromYaml(pinText, (t) => pinSpecs[t]);
check('a pin read as the value of its input', pg.nodes[0].data.values, { ckpt_name: { file: 'a.safetensors', sha256: 'ABCDEF0123' } });
check('a pin written back: flow maps, as hand-written', toYaml(pg.doc, pg.nodes, pg.edges, (t) => pinSpecs[t]),
  'flowrun: 1\nparams:\n  m: { type: STRING, default: { file: b.safetensors, sha256: "0123456789" } }\nnodes:\n'
  + '  a:\n    type: Ckpt\n    inputs: { ckpt_name: { file: a.safetensors, sha256: ABCDEF0123 } }\n    ui: { x: 1, y: 2 }\n'
  + '  b:\n    type: Ckpt\n    inputs: { ckpt_name: $m }\n    ui: { x: 3, y: 4 }\n');

if (fails) { console.log(`${fails} failed`); process.exit(1); }
console.log('ok: editor YAML writer');
