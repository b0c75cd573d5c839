// The flowrun editor: the canvas (@xyflow/react) over the store (store/store.js), the add-node search and
// menu, the header (open, save, run), the params of the graph, and the queue, history and gallery.
// It loads and saves the YAML the CLI runs, runs unsaved graphs by sending their YAML, and shows live
// node states from /ws events.
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import { ReactFlow, ReactFlowProvider, Background, Controls, MiniMap, useReactFlow } from '@xyflow/react';
import { useHotkeys } from 'react-hotkeys-hook';
import { get as idbGet, set as idbSet } from 'idb-keyval';
import YAML from 'yaml';
import { fromYaml, subgraphSpec, toYaml, isPin, EDITOR_SPECS, GROUP } from './store/yaml.js';
import { useStore, dragStart, dragStop, dragOrigin, undo, redo, clearHistory } from './store/store.js';
import * as API from './api/index.js';
import { pngText } from './api/png.js';
import { nodeTypes, SpecContext, PinBadge } from './canvas/FlowNode.jsx';
import { SearchBox, AddMenu, accepts } from './panels/Search.jsx';
import { QueuePanel, Gallery, Help } from './panels/Queue.jsx';

const AUTOSAVE_KEY = 'flowrun-autosave';

// The node a message is about: "node 'x'", "node x:", "x.input" forms the loader and engine use.
function nodeInMessage(msg, ids) {
  for (const re of [/node '([^']+)'/, /node "([^"]+)"/, /\bnode ([A-Za-z_][\w-]*)/]) {
    const m = msg.match(re);
    if (m && ids.includes(m[1])) return m[1];
  }
  const words = msg.match(/[A-Za-z_][\w-]*/g) || [];
  return words.find((w) => ids.includes(w)) || null;
}

// What a param sends and shows: its default, or the file name of a pinned one ({file, sha256}).
function paramValue(d) {
  if (!d || typeof d !== 'object') return undefined;
  if ('file' in d) return d.file;
  const v = d.default;
  return v && typeof v === 'object' && 'file' in v ? v.file : v;
}

function Editor() {
  const [schema, setSchema] = useState({});
  const [subgraphs, setSubgraphs] = useState({});
  const [graphs, setGraphs] = useState([]);
  const [message, setMessage] = useState('');
  const [error, setError] = useState(null); // the whole message of the last load or run error
  const [run, setRun] = useState(null); // {id, state}
  const [runs, setRuns] = useState([]);
  const [progress, setProgress] = useState(null);
  const [preview, setPreview] = useState(null);
  const [search, setSearch] = useState(null); // {screen, flow, filter, from}
  const [menu, setMenu] = useState(null);
  const [confirm, setConfirm] = useState(null); // {text, onYes}
  const [help, setHelp] = useState(false);
  const [restored, setRestored] = useState(false);
  const [filter, setFilter] = useState('');
  const nodes = useStore((s) => s.nodes);
  const edges = useStore((s) => s.edges);
  const doc = useStore((s) => s.doc);
  const path = useStore((s) => s.path);
  const savedPath = useStore((s) => s.savedPath);
  const st = useStore.getState;
  const runRef = useRef(null);
  const pendingRef = useRef(new Map());
  const applyRef = useRef(null);
  const mouse = useRef({ x: 400, y: 300 });
  const connectFrom = useRef(null);
  const fileRef = useRef(null);
  const flow = useReactFlow();

  const specOf = useCallback((t) => schema[t] || subgraphs[t] || EDITOR_SPECS[t], [schema, subgraphs]);
  const specs = useMemo(() => Object.values({ ...schema, ...subgraphs, ...EDITOR_SPECS }), [schema, subgraphs]);
  // A group moves the nodes that lie inside its box when its drag starts.
  const groupDrag = useRef(null);
  const onNodeDragStart = (e, node) => {
    dragStart();
    if (node.data.type !== GROUP) return;
    const { x, y } = dragOrigin(node.id) || node.position;
    const w = node.data.w || 400;
    const h = node.data.h || 300;
    const members = st().nodes.filter((n) => n.id !== node.id && n.data.type !== GROUP && n.position.x >= x && n.position.y >= y && n.position.x < x + w && n.position.y < y + h);
    groupDrag.current = { id: node.id, from: { x, y }, members: new Map(members.map((n) => [n.id, n.position])) };
  };
  const onNodeDrag = (e, node) => {
    const g = groupDrag.current;
    if (!g || g.id !== node.id) return;
    const dx = node.position.x - g.from.x;
    const dy = node.position.y - g.from.y;
    useStore.setState((s) => ({ nodes: s.nodes.map((n) => (g.members.has(n.id) ? { ...n, position: { x: g.members.get(n.id).x + dx, y: g.members.get(n.id).y + dy } } : n)) }));
  };
  const onNodeDragStop = () => { groupDrag.current = null; dragStop(); };
  const refreshRuns = useCallback(() => API.getRuns().then((r) => setRuns(r.runs)).catch(() => {}), []);
  const refreshGraphs = () => API.getGraphs().then((g) => setGraphs(g.graphs)).catch(() => {});

  useEffect(() => {
    // The node list is what everything else waits for (the autosave is restored after it): a failed fetch
    // (a server still starting, a loaded machine) is tried again, 10 times a second apart.
    let stop = false;
    const fetchSchema = (n) => API.getSchema().then(
      (s) => { if (!stop) setSchema(Object.fromEntries(s.nodes.map((x) => [x.name, x]))); },
      (e) => {
        if (stop) return;
        if (n < 10) { setMessage(`${e.message}: trying again`); setTimeout(() => fetchSchema(n + 1), 1000); }
        else showError(`cannot read the node list: ${e.message}`);
      });
    fetchSchema(1);
    refreshGraphs();
    refreshRuns();
    return () => { stop = true; };
  }, []);

  const showError = useCallback((msg, node) => {
    setError(msg);
    const ids = st().nodes.map((n) => n.id);
    const id = node || nodeInMessage(msg, ids);
    st().setErrorNode(id);
    if (id) st().setRunState(id, { kind: 'error', message: msg });
  }, []);

  // Subgraph node types are files: learn their interface from the file, relative to the graph's folder.
  const loadSubgraphs = useCallback(async (text, basePath) => {
    const yamlDoc = YAML.parse(text) || {};
    const dir = basePath.includes('/') ? basePath.slice(0, basePath.lastIndexOf('/') + 1) : '';
    const found = {};
    for (const n of Object.values(yamlDoc.nodes || {})) {
      if (!n || typeof n.type !== 'string' || !/\.ya?ml$/.test(n.type) || subgraphs[n.type]) continue;
      const norm = [];
      for (const p of (dir + n.type).split('/')) (p === '..' ? norm.pop() : p !== '.' && norm.push(p));
      try {
        const g = await API.getGraph(norm.join('/'));
        found[n.type] = subgraphSpec(n.type, g.yaml, schema);
      } catch (e) {
        setMessage(`subgraph ${n.type}: ${e.message}`);
      }
    }
    // Inline graphs (graphs:, what `flowrun bundle` and pictures carry) are node types by name.
    for (const [name, g] of Object.entries(yamlDoc.graphs || {})) found[name] = subgraphSpec(name, YAML.stringify(g), schema);
    return found;
  }, [schema, subgraphs]);

  // Loads YAML text as the graph. saved: the graphs-folder path it came from (null: unsaved).
  const loadText = useCallback(async (text, name, { saved = null, params = null, relayout = false } = {}) => {
    try {
      const subs = await loadSubgraphs(text, name);
      const all = { ...subgraphs, ...subs };
      setSubgraphs(all);
      const g = fromYaml(text, (t) => schema[t] || all[t] || EDITOR_SPECS[t], { relayout });
      if (params && g.doc.params)
        for (const [k, v] of Object.entries(params))
          if (g.doc.params[k]) g.doc.params[k] = { ...g.doc.params[k], default: v };
      for (const n of g.nodes) n.data.mode = 'normal';
      st().setGraph(g);
      st().setPath(name);
      st().setSavedPath(saved);
      st().setRunStates(() => ({}));
      st().setErrorNode(null);
      setError(null);
      setMessage(`loaded ${name}`);
      setTimeout(() => flow.fitView({ padding: 0.1 }), 50);
      return true;
    } catch (e) {
      showError(`cannot load ${name}: ${e.message}`);
      return false;
    }
  }, [schema, subgraphs, loadSubgraphs, flow]);

  const load = useCallback(async (p) => {
    try {
      const g = await API.getGraph(p);
      if (await loadText(g.yaml, p, { saved: p })) clearHistory();
    } catch (e) {
      showError(`cannot load ${p}: ${e.message}`);
    }
  }, [loadText]);

  // Autosave: the editor's own state (nodes with their modes, edges, the document, the path), twice: in
  // this tab's sessionStorage (a reload of the tab brings back its own latest graph) and in IndexedDB (the
  // latest of any tab: what a new tab starts from), as ComfyUI keeps a workflow per tab. Written 300 ms after
  // the last change, but never more than 2 s after the first unwritten one (edits that keep coming, a run's
  // updates, do not put it off for ever), and at once when the page is hidden or left (a reload, a closed
  // tab): sessionStorage is written synchronously there, so a reload never loses the last edit. What is
  // written is the store as it is at that moment. Restored once the schema is known. An IndexedDB read that
  // fails (it can, for a moment, while the page that wrote it is still closing) is tried again; one that
  // keeps failing turns the autosave off in this tab, so the empty canvas is never written over the saved
  // graph.
  useEffect(() => {
    if (!Object.keys(schema).length || restored) return undefined;
    let stop = false;
    const apply = (a, from) => {
      if (a && a.nodes) {
        st().setGraph({ nodes: a.nodes, edges: a.edges, doc: a.doc });
        st().setPath(a.path || 'untitled.yaml');
        st().setSavedPath(a.savedPath || null);
        clearHistory();
        setMessage(`restored the autosaved graph (${from})`);
        setTimeout(() => flow.fitView({ padding: 0.1 }), 50);
      }
      setRestored(true);
    };
    let own = null;
    try {
      own = JSON.parse(sessionStorage.getItem(AUTOSAVE_KEY) || 'null');
    } catch {
      own = null;
    }
    if (own && own.nodes) {
      apply(own, "this tab's");
      return undefined;
    }
    const read = (n) => idbGet(AUTOSAVE_KEY).then((a) => {
      if (!stop) apply(a, 'the latest of any tab');
    }, (e) => {
      if (stop) return;
      if (n < 5) {
        setTimeout(() => read(n + 1), 200 * n);
        return;
      }
      showError(`cannot read the autosaved graph (${e && e.message}): the autosave is off in this tab`);
      setRestored('off');
    });
    read(1);
    return () => { stop = true; };
  }, [schema, restored]);
  const autosave = useRef({ timer: null, since: 0 });
  const writeAutosave = useCallback(() => {
    const a = autosave.current;
    clearTimeout(a.timer);
    a.timer = null;
    a.since = 0;
    const s = st();
    const strip = s.nodes.map(({ id, type, position, data }) => ({ id, type, position, data }));
    const state = { nodes: strip, edges: s.edges, doc: s.doc, path: s.path, savedPath: s.savedPath };
    try {
      sessionStorage.setItem(AUTOSAVE_KEY, JSON.stringify(state));
    } catch {
      try {
        sessionStorage.removeItem(AUTOSAVE_KEY); // too large: a reload falls back to IndexedDB
      } catch { /* no sessionStorage at all */ }
    }
    idbSet(AUTOSAVE_KEY, state).catch(() => {});
  }, []);
  useEffect(() => {
    if (restored !== true) return;
    const a = autosave.current;
    const now = Date.now();
    if (!a.since) a.since = now;
    clearTimeout(a.timer);
    a.timer = setTimeout(writeAutosave, Math.max(0, Math.min(300, a.since + 2000 - now)));
  }, [nodes, edges, doc, path, savedPath, restored, writeAutosave]);
  useEffect(() => {
    if (restored !== true) return undefined;
    const flush = () => { if (autosave.current.timer) writeAutosave(); };
    const hidden = () => { if (document.visibilityState === 'hidden') flush(); };
    window.addEventListener('pagehide', flush);
    document.addEventListener('visibilitychange', hidden);
    return () => {
      window.removeEventListener('pagehide', flush);
      document.removeEventListener('visibilitychange', hidden);
      clearTimeout(autosave.current.timer);
    };
  }, [restored, writeAutosave]);

  const yamlText = () => toYaml(st().doc, st().nodes, st().edges, specOf);

  // force: the user said "save anyway" to a graph that does not load yet (the server then checks only
  // that it is YAML). A graph the loader refuses (422) asks first.
  const doSave = async (p, force = false) => {
    const text = yamlText();
    try {
      await API.saveGraph(p, text, force);
      st().setSavedPath(p);
      setMessage(`saved ${p}${force ? ' (not complete)' : ''}`);
      refreshGraphs();
    } catch (e) {
      if (e.status === 422 && !force)
        setConfirm({ text: `this graph is not complete: ${e.message}. Save anyway?`, yes: 'Save anyway', onYes: () => doSave(p, true) });
      else showError(`not saved: ${e.message}`);
    }
  };
  const save = () => {
    const p = st().path;
    if (graphs.includes(p) && p !== st().savedPath)
      setConfirm({ text: `${p} exists in the graphs folder. Overwrite it?`, yes: 'Overwrite', onYes: () => doSave(p) });
    else doSave(p);
  };

  // Seeds after a queued run, as ComfyUI's control_after_generate: on the node, or on the param the
  // seed is bound to.
  const applySeedControls = () => {
    const s = st();
    for (const n of s.nodes) {
      for (const [name, ctl] of Object.entries(n.data.seedControl || {})) {
        if (!ctl || ctl === 'fixed') continue;
        const spec = specOf(n.data.type);
        const inp = spec && spec.inputs.find((i) => i.name === name);
        let v = n.data.values[name] ?? (inp && inp.default) ?? 0;
        const step = (x) => (ctl === 'increment' ? x + 1 : ctl === 'decrement' ? Math.max(0, x - 1) : Math.floor(Math.random() * 2 ** 32));
        if (typeof v === 'string' && v.startsWith('$')) {
          const k = v.slice(1);
          const d = s.doc.params && s.doc.params[k];
          if (d) useStore.setState((x) => ({ doc: { ...x.doc, params: { ...x.doc.params, [k]: { ...d, default: step(Number(d.default) || 0) } } } }));
        } else {
          s.setValue(n.id, name, step(Number(v) || 0));
        }
      }
    }
  };

  const queue = async () => {
    try {
      const text = yamlText();
      const params = {};
      // A pinned param ({file, sha256}, docs/graph-format.md) sends its file name: the server keeps the pin.
      for (const [k, d] of Object.entries(st().doc.params || {})) {
        const v = paramValue(d);
        if (v !== undefined) params[k] = v;
      }
      st().setRunStates(() => Object.fromEntries(st().nodes.map((n) => [n.id, { kind: 'queued' }])));
      st().setErrorNode(null);
      setError(null);
      setPreview(null);
      runRef.current = -1;
      const sp = st().savedPath;
      const r = await API.queueRun({ ...(sp && sp === st().path ? { path: sp } : {}), yaml: text, params });
      runRef.current = r.id;
      setRun({ id: r.id, state: 'queued' });
      setMessage(`run ${r.id} queued`);
      for (const ev of pendingRef.current.get(r.id) || []) applyRef.current(ev);
      pendingRef.current.clear();
      applySeedControls();
      refreshRuns();
    } catch (e) {
      runRef.current = null;
      pendingRef.current.clear();
      st().setRunStates(() => ({}));
      showError(`run refused: ${e.message}`);
    }
  };

  // "Pin models": the server pins every model file the graph names by its SHA-256 (the same rewrite as
  // `flowrun pin`, docs/graph-format.md "Pins"); the pins land in the graph as one undo step, and the
  // status line says what was pinned and what was not found.
  const pinModels = async () => {
    setSearch(null);
    try {
      const sp = st().savedPath; // its subgraph files are found from its folder, as for a run
      const r = await API.pinModels(yamlText(), sp && sp === st().path ? sp : null);
      const n = st().applyPins(r.inputs);
      const where = (i) => (i.param ? `$${i.param}` : `${i.node}.${i.input}`);
      const missing = r.inputs.filter((i) => i.state === 'not_found').map((i) => `${where(i)} (${i.file || 'no file'})`);
      const odd = r.inputs.filter((i) => i.state === 'not_pinnable').map(where);
      const already = r.inputs.filter((i) => i.state === 'already').length;
      const parts = [`pinned ${n} model file${n === 1 ? '' : 's'}`];
      if (already) parts.push(`${already} already pinned`);
      if (missing.length) parts.push(`not found: ${missing.join(', ')}`);
      if (odd.length) parts.push(`not pinnable: ${odd.join(', ')}`);
      if (!r.inputs.length) parts.push('this graph names no model file');
      setMessage(parts.join('; '));
    } catch (e) {
      showError(`pin models: ${e.message}`);
    }
  };
  const commands = [
    { id: 'pin-models', name: 'Pin models', help: 'pin every model file by its sha256 (as flowrun pin)', run: pinModels },
  ];

  const cancel = async (id) => {
    try { await API.cancelRun(id); } catch (e) { setMessage(e.message); }
    refreshRuns();
  };

  const openRun = async (id) => {
    try {
      const r = await API.getRun(id);
      if (r.yaml === null) throw new Error(`run ${id}: its graph is no longer kept`);
      await loadText(r.yaml, r.run.path || `run-${id}.yaml`, { saved: r.run.path || null, params: r.params });
      setMessage(`opened run ${id}`);
    } catch (e) {
      showError(e.message);
    }
  };

  // Live events. Node ids inside a subgraph are "outer/inner": they show on the outer node.
  useEffect(() => {
    let ws;
    let stop = false;
    let refresh = null;
    const later = () => { clearTimeout(refresh); refresh = setTimeout(refreshRuns, 100); };
    const connect = () => {
      const url = new URL('ws', window.location.href);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      ws = new WebSocket(url);
      ws.onclose = () => { if (!stop) setTimeout(connect, 1000); };
      ws.onmessage = (m) => {
        const ev = JSON.parse(m.data);
        if (ev.event === 'run_queued' || ev.event === 'run_state' || ev.event === 'queue_moved') later();
        if (ev.event === 'progress' && ev.steps)
          setProgress((p) => ({ run: ev.run, node: ev.node, step: ev.step, steps: ev.steps, t0: p && p.run === ev.run && p.node === ev.node ? p.t0 : performance.now() }));
        if (ev.run && runRef.current === -1) {
          const list = pendingRef.current.get(ev.run) || [];
          if (list.length < 10000) list.push(ev);
          pendingRef.current.set(ev.run, list);
          return;
        }
        applyRef.current(ev);
      };
    };
    applyRef.current = (ev) => {
      if (ev.run !== runRef.current) return;
      const top = ev.node ? ev.node.split('/')[0] : null;
      const set = (s) => top && st().setRunState(top, s);
      switch (ev.event) {
        case 'run_state': setRun(ev.info); break;
        case 'node_cached': set({ kind: 'cached' }); break;
        case 'node_start': set({ kind: 'running', step: 0, steps: 0, preview: null }); break;
        case 'progress': set({ kind: 'running', step: ev.step, steps: ev.steps, preview: ev.preview || null }); if (ev.preview) setPreview(ev.preview); break;
        case 'node_done': set({ kind: 'done', ms: ev.ms }); break;
        case 'error': showError(ev.message, top); setMessage(`error: ${ev.message}`); break;
        case 'info': setMessage(ev.message); break;
        case 'warning': setMessage(`warning: ${ev.message}`); break;
        case 'output':
          // a preview (PreviewImage) lives in the server's temporary folder: shown on its node only
          if (ev.file) set({ image: API.outputUrl(ev.file, ev.run, ev.temp) });
          break;
        case 'run_done':
          st().setRunStates((rs) => {
            const out = {};
            for (const [id, s] of Object.entries(rs)) {
              if (!s || s.kind === 'queued') continue;
              if (s.kind === 'running' && ev.status !== 'ok') out[id] = ev.status === 'cancelled' ? { ...s, kind: 'cancelled' } : { kind: 'error', message: ev.status };
              else out[id] = s;
            }
            return out;
          });
          setMessage(`run ${ev.run}: ${ev.status}, ${ev.executed} ran, ${ev.cached} cached, ${Math.round(ev.ms)} ms`);
          break;
        default: break;
      }
    };
    connect();
    return () => { stop = true; if (ws) ws.close(); };
  }, []);

  const typeOf = useCallback((nodeId, handle, out) => {
    const n = st().nodes.find((x) => x.id === nodeId);
    const spec = n && specOf(n.data.type);
    const list = spec ? (out ? spec.outputs : spec.inputs) : [];
    const s = list.find((x) => x.name === handle);
    return s && s.type;
  }, [specOf]);
  const isValidConnection = useCallback((c) => {
    const a = typeOf(c.source, c.sourceHandle, true);
    const b = typeOf(c.target, c.targetHandle, false);
    return !!a && !!b && (a === b || a === '*' || b === '*');
  }, [typeOf]);

  // Adds a node at a flow position; connects it to the link the user dropped, if any.
  const place = (name, flowPos, from) => {
    const spec = specOf(name);
    if (!spec) return;
    const id = st().addNode(name, spec, flowPos);
    if (from) {
      const { nodeId, handleId, type, handleType } = from;
      if (handleType === 'source') {
        const i = spec.inputs.find((x) => x.socket && (x.type === type || x.type === '*'));
        if (i) st().connect({ source: nodeId, sourceHandle: handleId, target: id, targetHandle: i.name });
      } else {
        const o = spec.outputs.find((x) => x.type === type || x.type === '*');
        if (o) st().connect({ source: id, sourceHandle: o.name, target: nodeId, targetHandle: handleId });
      }
    }
    setSearch(null);
    setMenu(null);
  };

  const openSearchAt = (clientX, clientY, filter, from) => {
    setMenu(null);
    setSearch({ screen: { x: clientX, y: clientY }, flow: flow.screenToFlowPosition({ x: clientX, y: clientY }), filter, from });
  };
  const onDoubleClick = (e) => {
    if (!e.target.classList || !e.target.classList.contains('react-flow__pane')) return;
    openSearchAt(e.clientX, e.clientY, null, null);
  };
  const onPaneContextMenu = (e) => {
    e.preventDefault();
    setSearch(null);
    setMenu({ screen: { x: e.clientX, y: e.clientY }, flow: flow.screenToFlowPosition({ x: e.clientX, y: e.clientY }) });
  };
  const onConnectStart = (_, p) => { connectFrom.current = p; };
  const onConnectEnd = (e, cs) => {
    const from = connectFrom.current;
    connectFrom.current = null;
    if (!from || (cs && cs.toNode) || (cs && cs.isValid)) return;
    const target = e.target;
    if (!target.classList || !target.classList.contains('react-flow__pane')) return;
    const type = typeOf(from.nodeId, from.handleId, from.handleType === 'source');
    if (!type) return;
    const pt = 'changedTouches' in e ? e.changedTouches[0] : e;
    openSearchAt(pt.clientX, pt.clientY, { type, dir: from.handleType === 'source' ? 'in' : 'out' }, { ...from, type });
  };

  // Shortcuts (not while typing in a widget: react-hotkeys-hook skips form fields by default).
  const hk = { preventDefault: true };
  useHotkeys('mod+z', () => undo(), hk);
  useHotkeys(['mod+shift+z', 'mod+y'], () => redo(), hk);
  useHotkeys('mod+c', () => { const n = st().copy(); if (n) setMessage(`copied ${n} node${n > 1 ? 's' : ''}`); }, hk);
  useHotkeys('mod+v', () => {
    const n = st().paste(flow.screenToFlowPosition(mouse.current));
    if (n) setMessage(`pasted ${n} node${n > 1 ? 's' : ''}`);
  }, hk);
  useHotkeys('mod+d', () => {
    if (!st().copy()) return;
    const sel = st().nodes.filter((n) => n.selected);
    const x = Math.min(...sel.map((n) => n.position.x)) + 40;
    const y = Math.min(...sel.map((n) => n.position.y)) + 40;
    st().paste({ x, y });
  }, hk);
  useHotkeys('mod+b', () => st().toggleSelected('mode', 'bypass'), hk);
  useHotkeys('mod+m', () => st().toggleSelected('mode', 'mute'), hk);
  useHotkeys('alt+c', () => st().toggleSelected('collapsed'), hk);
  useHotkeys('mod+enter', () => queue(), { ...hk, enableOnFormTags: true });
  useHotkeys('mod+s', () => save(), { ...hk, enableOnFormTags: true });
  useHotkeys('shift+slash', () => setHelp((h) => !h));
  useHotkeys('mod+k', () => openSearchAt(window.innerWidth / 2 - 150, 120, null, null), hk);
  useHotkeys('escape', () => { setSearch(null); setMenu(null); setHelp(false); setConfirm(null); }, { enableOnFormTags: true });

  // Files dropped on the editor (or opened): a PNG with a flowrun workflow restores it; ComfyUI's API
  // JSON, or a PNG ComfyUI wrote (its "prompt" chunk), goes through the server's converter.
  const openFile = async (f) => {
    const buf = await f.arrayBuffer();
    const isPng = /\.png$/i.test(f.name) || f.type === 'image/png';
    let comfy = null;
    if (isPng) {
      const text = await pngText(buf, 'flowrun-workflow');
      if (text) {
        let p = {};
        try { p = JSON.parse((await pngText(buf, 'flowrun-params')) || '{}'); } catch { p = {}; }
        if (await loadText(text, f.name.replace(/\.png$/i, '.yaml'), { params: p })) setMessage(`restored the workflow of ${f.name}`);
        return;
      }
      comfy = await pngText(buf, 'prompt');
      if (!comfy) return showError(`${f.name}: this PNG carries no flowrun workflow and no ComfyUI prompt`);
    } else if (/\.ya?ml$/i.test(f.name)) {
      if (await loadText(new TextDecoder().decode(buf), f.name)) setMessage(`opened ${f.name} (unsaved)`);
      return;
    } else {
      comfy = new TextDecoder().decode(buf);
    }
    try {
      const r = await API.importComfy(comfy, f.name);
      if (await loadText(r.yaml, f.name.replace(/\.(png|json)$/i, '.yaml'), { relayout: true })) {
        setMessage(`imported ComfyUI workflow ${f.name}${r.notes.length ? ` (${r.notes.length} note${r.notes.length > 1 ? 's' : ''}: ${r.notes.join('; ')})` : ''}`);
      }
    } catch (e) {
      showError(`cannot import ${f.name}: ${e.message}`);
    }
  };
  const onDrop = async (e) => {
    e.preventDefault();
    const f = e.dataTransfer.files && e.dataTransfer.files[0];
    if (f) await openFile(f);
  };

  const setParam = (k, s) => {
    const n = Number(s);
    // a pinned param edited is a plain STRING param again: another name drops the pin
    const d = isPin(st().doc.params[k]) ? { type: 'STRING' } : st().doc.params[k] || {};
    const typed = d.type === 'STRING' ? s : s !== '' && !Number.isNaN(n) ? n : s;
    useStore.setState((x) => ({ doc: { ...x.doc, params: { ...x.doc.params, [k]: { ...d, default: typed } } } }));
  };
  // A new param from the params panel: a name the YAML accepts, a type, and a default of that type.
  const [newParam, setNewParam] = useState({ name: '', type: 'INT', def: '' });
  const addParam = () => {
    const { name, type, def } = newParam;
    const ps = st().doc.params || {};
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return showError(`new param: '${name}' is not a name (letters, digits and _, not starting with a digit)`);
    if (ps[name] !== undefined) return showError(`new param: this graph already has a param '${name}'`);
    let v = def;
    if (type === 'INT' || type === 'FLOAT') {
      v = Number(def);
      if (def.trim() === '' || Number.isNaN(v) || (type === 'INT' && !Number.isInteger(v))) return showError(`new param ${name}: the default '${def}' is not ${type === 'INT' ? 'an integer' : 'a number'}`);
    } else if (type === 'BOOL') {
      if (def !== 'true' && def !== 'false') return showError(`new param ${name}: the default of a BOOL is true or false, not '${def}'`);
      v = def === 'true';
    }
    useStore.setState((x) => ({ doc: { ...x.doc, params: { ...(x.doc.params || {}), [name]: { type, default: v } } } }));
    setNewParam({ name: '', type, def: '' });
    setMessage(`added param ${name}`);
  };
  const ctx = useMemo(() => ({ specOf }), [specOf]);
  const params = Object.entries(doc.params || {});

  return (
    <SpecContext.Provider value={ctx}>
      <div className="app" onDragOver={(e) => e.preventDefault()} onDrop={onDrop}
        onMouseMove={(e) => { mouse.current = { x: e.clientX, y: e.clientY }; }}>
        <header>
          <b>flowrun</b>
          <select data-testid="graph-select" value="" onChange={(e) => e.target.value && load(e.target.value)}>
            <option value="">open a graph…</option>
            {graphs.map((g) => <option key={g} value={g}>{g}</option>)}
          </select>
          <button data-testid="open-file" title="open a YAML graph, a ComfyUI API JSON or a PNG" onClick={() => fileRef.current.click()}>Open file…</button>
          <input ref={fileRef} data-testid="file-input" type="file" accept=".json,.png,.yaml,.yml" style={{ display: 'none' }}
            onChange={(e) => { const f = e.target.files[0]; e.target.value = ''; if (f) openFile(f); }} />
          <input data-testid="path" value={path} onChange={(e) => st().setPath(e.target.value)} title="file name in the graphs folder" />
          <span className="saved" data-testid="saved-state">{savedPath === path ? '' : 'unsaved'}</span>
          <button data-testid="save" onClick={save} title="Ctrl+S">Save</button>
          <button data-testid="run" className="primary" onClick={queue} title="Ctrl+Enter">Queue</button>
          <button data-testid="cancel" onClick={() => run && cancel(run.id)} disabled={!run || (run.state !== 'queued' && run.state !== 'running')}>Cancel</button>
          <button data-testid="pin-models" onClick={pinModels} title="pin every model file by its sha256, so a shared graph fails clearly on other weights (also in Ctrl+K)">Pin models</button>
          <button data-testid="undo" onClick={undo} title="Ctrl+Z">↶</button>
          <button data-testid="redo" onClick={redo} title="Ctrl+Shift+Z">↷</button>
          <button data-testid="help-button" onClick={() => setHelp(true)} title="?">?</button>
          <span className="msg" data-testid="message" title={message}>{message}</span>
          {run && <span data-testid="run-state" data-state={run.state}>run {run.id}: {run.state}</span>}
        </header>
        <aside className="palette">
          <div className="hint">Double-click the canvas to add a node, right-click for the menu, drag a link onto empty canvas for a node that takes it. <kbd>?</kbd> lists the keys.</div>
          <h4>params</h4>
          {params.map(([k, d]) => (
            <label key={k} className="widget">
              <span title={(d && d.help) || ''}>{k}</span>
              {(isPin(d) || (d && isPin(d.default))) && <PinBadge pin={isPin(d) ? d : d.default} testid={`param-pin-${k}`} />}
              <input data-testid={`param-${k}`} value={paramValue(d) ?? ''} onChange={(e) => setParam(k, e.target.value)} />
            </label>
          ))}
          <div className="row newparam">
            <input data-testid="new-param-name" placeholder="new param" value={newParam.name} onChange={(e) => setNewParam({ ...newParam, name: e.target.value })} />
            <select data-testid="new-param-type" value={newParam.type} onChange={(e) => setNewParam({ ...newParam, type: e.target.value })}>
              {['INT', 'FLOAT', 'STRING', 'BOOL'].map((t) => <option key={t} value={t}>{t}</option>)}
            </select>
            <input data-testid="new-param-default" placeholder="default" value={newParam.def} onChange={(e) => setNewParam({ ...newParam, def: e.target.value })}
              onKeyDown={(e) => { if (e.key === 'Enter') addParam(); }} />
            <button data-testid="new-param-add" className="small" title="add this param to the graph" onClick={addParam}>+</button>
          </div>
          <h4>library</h4>
          <input data-testid="palette-search" placeholder="filter the library" value={filter} onChange={(e) => setFilter(e.target.value)} />
          {specs.filter((s) => !filter || `${s.name} ${s.category || ''} ${(s.comfy || []).join(' ')}`.toLowerCase().includes(filter.toLowerCase())).map((s) => (
            <div key={s.name} className="entry" data-testid={`palette-${s.name}`} title={s.help}
              onClick={() => place(s.name, flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 }), null)}>
              {s.name} <small>{s.category}</small>
            </div>
          ))}
        </aside>
        <main onDoubleClick={onDoubleClick}>
          <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} onNodesChange={(c) => st().onNodesChange(c)}
            onEdgesChange={(c) => st().onEdgesChange(c)} onConnect={(c) => st().connect(c)} isValidConnection={isValidConnection}
            onConnectStart={onConnectStart} onConnectEnd={onConnectEnd} onPaneContextMenu={onPaneContextMenu}
            onPaneClick={() => { setSearch(null); setMenu(null); }}
            onNodeDragStart={onNodeDragStart} onNodeDrag={onNodeDrag} onNodeDragStop={onNodeDragStop} onSelectionDragStart={dragStart} onSelectionDragStop={dragStop}
            deleteKeyCode={['Backspace', 'Delete']} multiSelectionKeyCode={['Control', 'Meta', 'Shift']} selectionKeyCode="Shift"
            zoomOnDoubleClick={false}>
            <Background />
            <Controls />
            <MiniMap pannable zoomable bgColor="#25272b" maskColor="#000a" nodeColor="#555" nodeStrokeColor="#888" />
          </ReactFlow>
          {search && <SearchBox at={search.screen} filter={search.filter} specs={specs} commands={search.filter ? [] : commands} onClose={() => setSearch(null)}
            onPick={(name) => place(name, search.flow, search.from)} />}
          {menu && <AddMenu at={menu.screen} specs={specs} onClose={() => setMenu(null)} onPick={(name) => place(name, menu.flow, null)} />}
          {error && (
            <div className="errorbox" data-testid="error-box">
              <pre>{error}</pre>
              <button className="small" data-testid="error-close" onClick={() => { setError(null); st().setErrorNode(null); }}>✕</button>
            </div>
          )}
        </main>
        <aside className="outputs">
          {preview && <><h4>preview</h4><img data-testid="preview" src={preview} alt="sampler preview" /></>}
          <QueuePanel runs={runs} progress={progress} onCancel={cancel} onOpen={openRun}
            onMove={(id, before) => API.moveRun(id, before).then((r) => setRuns(r.runs)).catch((e) => setMessage(e.message))} />
          <Gallery runs={runs} />
        </aside>
        {help && <Help onClose={() => setHelp(false)} />}
        {confirm && (
          <div className="overlay" data-testid="confirm">
            <div className="helpbox">
              <p>{confirm.text}</p>
              <button data-testid="confirm-yes" className="primary" onClick={() => { const f = confirm.onYes; setConfirm(null); f(); }}>{confirm.yes || 'Yes'}</button>
              <button data-testid="confirm-no" onClick={() => setConfirm(null)}>Cancel</button>
            </div>
          </div>
        )}
      </div>
    </SpecContext.Provider>
  );
}

export default function App() {
  return <ReactFlowProvider><Editor /></ReactFlowProvider>;
}
