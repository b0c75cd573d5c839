// The flowrun editor: a palette from the server's schema, a node graph (@xyflow/react) that loads and
// saves the YAML the CLI runs, runs through the server's queue, and live node states from /ws events.
import React, { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import {
  ReactFlow, ReactFlowProvider, Background, Controls, Handle, Position,
  addEdge, applyEdgeChanges, applyNodeChanges, useReactFlow,
} from '@xyflow/react';
import { edgeFor, fromYaml, subgraphSpec, toYaml } from './graph.js';
import { pngText } from './png.js';

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw new Error(j.error || `HTTP ${r.status}`);
  return j;
}

const SpecContext = React.createContext(null);

function Widget({ input, value, onChange }) {
  const common = { 'data-testid': `w-${input.name}`, className: 'nodrag', title: input.help || '' };
  const v = value === undefined ? input.default : value;
  if (typeof v === 'string' && v.startsWith('$'))
    return <input {...common} value={v} onChange={(e) => onChange(e.target.value)} />;
  if (input.type === 'INT' || input.type === 'FLOAT') {
    const set = (s) => {
      if (s === '') return onChange(undefined);
      const n = input.type === 'INT' ? parseInt(s, 10) : parseFloat(s);
      if (!Number.isNaN(n)) onChange(n);
    };
    return (
      <span className="row">
        <input {...common} type="number" value={v ?? ''} min={input.min} max={input.max}
          step={input.type === 'INT' ? 1 : 'any'} onChange={(e) => set(e.target.value)} />
        {input.seed && (
          <button className="nodrag small" data-testid={`rand-${input.name}`} title="randomise"
            onClick={() => onChange(Math.floor(Math.random() * 2 ** 32))}>🎲</button>
        )}
      </span>
    );
  }
  if (input.type === 'BOOL')
    return <input {...common} type="checkbox" checked={!!v} onChange={(e) => onChange(e.target.checked)} />;
  if (input.type === 'ENUM' || input.choices)
    return (
      <select {...common} value={v ?? ''} onChange={(e) => onChange(e.target.value)}>
        {(input.choices || []).map((c) => <option key={c} value={c}>{c}</option>)}
      </select>
    );
  if (input.multiline)
    return <textarea {...common} rows={3} value={v ?? ''} onChange={(e) => onChange(e.target.value)} />;
  return <input {...common} value={v ?? ''} onChange={(e) => onChange(e.target.value)} />;
}

function FlowNode({ id, data }) {
  const { specOf, setValue } = React.useContext(SpecContext);
  const spec = specOf(data.type);
  const st = data.state || {};
  if (!spec)
    return <div className="node error" data-testid={`node-${id}`}><b>{id}</b>: unknown type {data.type}</div>;
  const sockets = spec.inputs.filter((i) => i.socket);
  const widgets = spec.inputs.filter((i) => !i.socket && !i.hidden);
  return (
    <div className={`node ${st.kind || ''}`} data-testid={`node-${id}`} data-state={st.kind || 'idle'}>
      <div className="title">
        <b>{id}</b> <span className="type">{spec.subgraph ? `⧉ ${data.type}` : data.type}</span>
      </div>
      <div className="status" data-testid={`status-${id}`}>
        {st.kind === 'running' && (st.steps ? `running ${st.step}/${st.steps}` : 'running…')}
        {st.kind === 'cached' && 'cached'}
        {st.kind === 'done' && `done in ${st.ms < 10 ? st.ms.toFixed(1) : Math.round(st.ms)} ms`}
        {st.kind === 'cancelled' && (st.steps ? `cancelled at ${st.step}/${st.steps}` : 'cancelled')}
        {st.kind === 'error' && <span className="msg">{st.message}</span>}
        {st.kind === 'queued' && 'waiting'}
      </div>
      {st.kind === 'running' && st.steps > 0 && (
        <div className="bar"><div style={{ width: `${(100 * st.step) / st.steps}%` }} /></div>
      )}
      <div className="io">
        <div className="ins">
          {sockets.map((i) => (
            <div key={i.name} className="sock">
              <Handle type="target" position={Position.Left} id={i.name} className={`h t-${i.type}`} />
              {i.name} <i>{i.type}</i>
            </div>
          ))}
        </div>
        <div className="outs">
          {spec.outputs.map((o) => (
            <div key={o.name} className="sock out">
              <i>{o.type}</i> {o.name}
              <Handle type="source" position={Position.Right} id={o.name} className={`h t-${o.type}`} />
            </div>
          ))}
        </div>
      </div>
      {widgets.map((i) => (
        <label key={i.name} className="widget">
          <span>{i.name}</span>
          <Widget input={i} value={data.values[i.name]} onChange={(v) => setValue(id, i.name, v)} />
        </label>
      ))}
      {st.preview && <img className="preview" data-testid={`preview-${id}`} src={st.preview} alt="preview" />}
      {st.image && <img className="preview" data-testid={`image-${id}`} src={st.image} alt="output" />}
    </div>
  );
}

const nodeTypes = { fr: FlowNode };

function Editor() {
  const [schema, setSchema] = useState({});
  const [subgraphs, setSubgraphs] = useState({});
  const [graphs, setGraphs] = useState([]);
  const [path, setPath] = useState('untitled.yaml');
  const [doc, setDoc] = useState({ flowrun: 1, nodes: {} });
  const [nodes, setNodes] = useState([]);
  const [edges, setEdges] = useState([]);
  const [params, setParams] = useState({});
  const [filter, setFilter] = useState('');
  const [message, setMessage] = useState('');
  const [run, setRun] = useState(null); // {id, state, executed, cached, ms}
  const [outputs, setOutputs] = useState([]);
  const [preview, setPreview] = useState(null);
  const runRef = useRef(null);
  // Events by run id: a fast run can finish before the answer to its POST arrives, so events of runs
  // not yet known here are kept and replayed once the id is known.
  const pendingRef = useRef(new Map());
  const applyRef = useRef(null);
  const flow = useReactFlow();

  const specOf = useCallback((t) => schema[t] || subgraphs[t], [schema, subgraphs]);

  useEffect(() => {
    api('api/schema').then((s) => setSchema(Object.fromEntries(s.nodes.map((n) => [n.name, n])))).catch((e) => setMessage(e.message));
    api('api/graphs').then((g) => setGraphs(g.graphs)).catch(() => {});
  }, []);

  // Subgraph node types are files: learn their interface from the file, relative to the graph's folder.
  const loadSubgraphs = useCallback(async (text, basePath) => {
    const yamlDoc = (await import('yaml')).default.parse(text) || {};
    const dir = basePath.includes('/') ? basePath.slice(0, basePath.lastIndexOf('/') + 1) : '';
    const found = {};
    for (const n of Object.values(yamlDoc.nodes || {})) {
      if (!n || typeof n.type !== 'string' || !/\.ya?ml$/.test(n.type) || subgraphs[n.type]) continue;
      const parts = (dir + n.type).split('/');
      const norm = [];
      for (const p of parts) (p === '..' ? norm.pop() : p !== '.' && norm.push(p));
      try {
        const g = await api(`api/graph?path=${encodeURIComponent(norm.join('/'))}`);
        found[n.type] = subgraphSpec(n.type, g.yaml, schema);
      } catch (e) {
        setMessage(`subgraph ${n.type}: ${e.message}`);
      }
    }
    // Inline graphs (graphs:, what `flowrun bundle` and pictures carry) are node types by name.
    const Y = (await import('yaml')).default;
    for (const [name, g] of Object.entries(yamlDoc.graphs || {})) found[name] = subgraphSpec(name, Y.stringify(g), schema);
    return found;
  }, [schema, subgraphs]);

  const loadText = useCallback(async (text, name, overrideParams) => {
    try {
      const subs = await loadSubgraphs(text, name);
      const all = { ...subgraphs, ...subs };
      setSubgraphs(all);
      const g = fromYaml(text, (t) => schema[t] || all[t]);
      setDoc(g.doc);
      setNodes(g.nodes);
      setEdges(g.edges);
      const p = {};
      // A pinned param ({file, sha256}, docs/graph-format.md) shows and sends its file name: the server keeps the pin.
      const plain = (v) => (v && typeof v === 'object' && 'file' in v ? v.file : v);
      for (const [k, d] of Object.entries(g.doc.params || {})) p[k] = d && 'file' in Object(d) ? d.file : plain(d && d.default);
      setParams({ ...p, ...(overrideParams || {}) });
      setPath(name);
      setOutputs([]);
      setMessage(`loaded ${name}`);
      setTimeout(() => flow.fitView({ padding: 0.1 }), 50);
    } catch (e) {
      setMessage(`cannot load ${name}: ${e.message}`);
    }
  }, [schema, subgraphs, loadSubgraphs, flow]);

  const load = useCallback(async (p) => {
    try {
      const g = await api(`api/graph?path=${encodeURIComponent(p)}`);
      await loadText(g.yaml, p);
    } catch (e) {
      setMessage(`cannot load ${p}: ${e.message}`);
    }
  }, [loadText]);

  const setValue = useCallback((id, name, v) => {
    setNodes((ns) => ns.map((n) => (n.id === id ? { ...n, data: { ...n.data, values: { ...n.data.values, [name]: v } } } : n)));
  }, []);

  const yamlText = () => toYaml(doc, nodes, edges, specOf);

  const save = async () => {
    try {
      await api('api/graph', { path, yaml: yamlText() });
      setMessage(`saved ${path}`);
      api('api/graphs').then((g) => setGraphs(g.graphs)).catch(() => {});
    } catch (e) {
      setMessage(`not saved: ${e.message}`);
    }
  };

  const queue = async () => {
    try {
      const typed = {};
      for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') typed[k] = v;
      setNodes((ns) => ns.map((n) => ({ ...n, data: { ...n.data, state: { kind: 'queued' } } })));
      setOutputs([]);
      setPreview(null);
      runRef.current = -1;
      const r = await api('api/run', { path, yaml: yamlText(), params: typed });
      runRef.current = r.id;
      // 'queued' first: the replayed events may already say the run is done, and must win.
      setRun({ id: r.id, state: 'queued' });
      setMessage(`run ${r.id} queued`);
      for (const ev of pendingRef.current.get(r.id) || []) applyRef.current(ev);
      pendingRef.current.clear();
    } catch (e) {
      runRef.current = null; /* no run to wait for: stop keeping events aside */
      pendingRef.current.clear();
      setMessage(`run refused: ${e.message}`);
    }
  };

  const cancel = async () => {
    if (!run) return;
    try {
      await api('api/cancel', { id: run.id });
    } catch (e) {
      setMessage(e.message);
    }
  };

  // Live events. Node ids inside a subgraph are "outer/inner": they show on the outer node.
  useEffect(() => {
    let ws;
    let stop = false;
    const connect = () => {
      const url = new URL('ws', window.location.href);
      url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
      ws = new WebSocket(url);
      ws.onclose = () => { if (!stop) setTimeout(connect, 1000); };
      ws.onmessage = (m) => {
        const ev = JSON.parse(m.data);
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
        const set = (state) => setNodes((ns) => ns.map((n) => (n.id === top ? { ...n, data: { ...n.data, state: { ...n.data.state, ...state } } } : n)));
        switch (ev.event) {
          case 'run_state': setRun(ev.info); break;
          case 'node_cached': set({ kind: 'cached' }); break;
          case 'node_start': set({ kind: 'running', step: 0, steps: 0, preview: null }); break;
          case 'progress': set({ kind: 'running', step: ev.step, steps: ev.steps, preview: ev.preview || null }); if (ev.preview) setPreview(ev.preview); break;
          case 'node_done': set({ kind: ev.node === top ? 'done' : 'running', ms: ev.ms }); if (ev.node !== top) set({ kind: 'done', ms: ev.ms }); break;
          case 'error': if (top) set({ kind: 'error', message: ev.message }); setMessage(`error: ${ev.message}`); break;
          case 'info': setMessage(ev.message); break; // e.g. "loading MODEL from ...": long, worth seeing
          case 'warning': setMessage(`warning: ${ev.message}`); break;
          case 'output':
            if (ev.file) {
              // a preview (PreviewImage) lives in the server's temporary folder: shown on its node only
              const src = `api/output?${ev.temp ? "temp=1&" : ""}file=${encodeURIComponent(ev.file)}&r=${ev.run}`;
              if (!ev.temp) setOutputs((o) => [...o, { file: ev.file, src }]);
              set({ image: src });
            }
            break;
          case 'run_done':
            // Nodes that never ran go back to idle; one that was running when the run was cancelled
            // (or stopped by another node's error) says so instead of looking busy for ever.
            setNodes((ns) => ns.map((n) => {
              const k = n.data.state && n.data.state.kind;
              if (k === 'queued') return { ...n, data: { ...n.data, state: null } };
              if (k === 'running' && ev.status !== 'ok')
                return { ...n, data: { ...n.data, state: ev.status === 'cancelled' ? { ...n.data.state, kind: 'cancelled' } : { kind: 'error', message: ev.status } } };
              return n;
            }));
            setMessage(`run ${ev.run}: ${ev.status}, ${ev.executed} ran, ${ev.cached} cached, ${Math.round(ev.ms)} ms`);
            break;
          default: break;
        }
    };
    connect();
    return () => { stop = true; if (ws) ws.close(); };
  }, []);

  const onNodesChange = useCallback((c) => setNodes((ns) => applyNodeChanges(c, ns)), []);
  const onEdgesChange = useCallback((c) => setEdges((es) => applyEdgeChanges(c, es)), []);
  const typeOf = useCallback((nodeId, handle, out) => {
    const n = nodes.find((x) => x.id === nodeId);
    const spec = n && specOf(n.data.type);
    const list = spec ? (out ? spec.outputs : spec.inputs) : [];
    const s = list.find((x) => x.name === handle);
    return s && s.type;
  }, [nodes, specOf]);
  const isValidConnection = useCallback((c) => {
    const a = typeOf(c.source, c.sourceHandle, true);
    const b = typeOf(c.target, c.targetHandle, false);
    return !!a && !!b && (a === b || a === '*' || b === '*');
  }, [typeOf]);
  const onConnect = useCallback((c) => {
    // One link per input: a new link replaces the old one.
    setEdges((es) => addEdge(edgeFor(c.source, c.sourceHandle, c.target, c.targetHandle),
      es.filter((e) => !(e.target === c.target && e.targetHandle === c.targetHandle))));
  }, []);

  const addNode = (name) => {
    const spec = specOf(name);
    let base = name.replace(/\.ya?ml$/, '').replace(/[^A-Za-z0-9_]/g, '_').toLowerCase();
    let id = base;
    for (let k = 2; nodes.some((n) => n.id === id); k++) id = `${base}${k}`;
    const values = {};
    for (const i of spec.inputs) if (!i.socket && i.default !== undefined) values[i.name] = i.default;
    const c = flow.screenToFlowPosition({ x: window.innerWidth / 2, y: window.innerHeight / 2 });
    setNodes((ns) => [...ns, { id, type: 'fr', position: c, data: { type: name, values, state: null } }]);
  };

  const onDrop = async (e) => {
    e.preventDefault();
    const f = e.dataTransfer.files && e.dataTransfer.files[0];
    if (!f) return;
    const buf = await f.arrayBuffer();
    const text = await pngText(buf, 'flowrun-workflow');
    if (!text) return setMessage(`${f.name}: no flowrun workflow in this file`);
    let p = {};
    try { p = JSON.parse((await pngText(buf, 'flowrun-params')) || '{}'); } catch { p = {}; }
    await loadText(text, f.name.replace(/\.png$/i, '.yaml'), p);
    setMessage(`restored the workflow of ${f.name}`);
  };

  const palette = Object.values({ ...schema, ...subgraphs })
    .filter((s) => !filter || (s.name + ' ' + (s.category || '') + ' ' + (s.help || '')).toLowerCase().includes(filter.toLowerCase()));
  const ctx = useMemo(() => ({ specOf, setValue }), [specOf, setValue]);

  return (
    <SpecContext.Provider value={ctx}>
      <div className="app" onDragOver={(e) => e.preventDefault()} onDrop={onDrop}>
        <header>
          <b>flowrun</b>
          <select data-testid="graph-select" value="" onChange={(e) => e.target.value && load(e.target.value)}>
            <option value="">open a graph…</option>
            {graphs.map((g) => <option key={g} value={g}>{g}</option>)}
          </select>
          <input data-testid="path" value={path} onChange={(e) => setPath(e.target.value)} title="file name in the graphs folder" />
          <button data-testid="save" onClick={save}>Save</button>
          <button data-testid="run" className="primary" onClick={queue}>Run</button>
          <button data-testid="cancel" onClick={cancel} disabled={!run || (run.state !== 'queued' && run.state !== 'running')}>Cancel</button>
          <span className="msg" data-testid="message">{message}</span>
          {run && <span data-testid="run-state" data-state={run.state}>run {run.id}: {run.state}</span>}
        </header>
        <aside className="palette">
          <input data-testid="palette-search" placeholder="search nodes" value={filter} onChange={(e) => setFilter(e.target.value)} />
          {palette.map((s) => (
            <div key={s.name} className="entry" data-testid={`palette-${s.name}`} title={s.help} onClick={() => addNode(s.name)}>
              {s.name} <small>{s.category}</small>
            </div>
          ))}
          {Object.keys(params).length > 0 && <h4>params</h4>}
          {Object.entries(params).map(([k, v]) => (
            <label key={k} className="widget">
              <span>{k}</span>
              <input data-testid={`param-${k}`} value={v ?? ''} onChange={(e) => {
                const s = e.target.value;
                const n = Number(s);
                setParams((p) => ({ ...p, [k]: s !== '' && !Number.isNaN(n) ? n : s }));
              }} />
            </label>
          ))}
        </aside>
        <main>
          <ReactFlow nodes={nodes} edges={edges} nodeTypes={nodeTypes} onNodesChange={onNodesChange}
            onEdgesChange={onEdgesChange} onConnect={onConnect} isValidConnection={isValidConnection}
            deleteKeyCode={['Backspace', 'Delete']} fitView>
            <Background />
            <Controls />
          </ReactFlow>
        </main>
        <aside className="outputs">
          {preview && <><h4>preview</h4><img data-testid="preview" src={preview} alt="sampler preview" /></>}
          <h4>outputs</h4>
          {outputs.map((o) => <img key={o.src} data-testid="output-image" src={o.src} alt={o.file} title={o.file} />)}
        </aside>
      </div>
    </SpecContext.Provider>
  );
}

export default function App() {
  return <ReactFlowProvider><Editor /></ReactFlowProvider>;
}
