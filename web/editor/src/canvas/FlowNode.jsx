// A node on the canvas: title, run status, sockets, and one widget per literal input (numbers, choices,
// growing text areas for prompts, model files as dropdowns from the server, seeds with ComfyUI's
// control-after-generate). Any widget can become an input socket (⊙) and back (⊘), and be bound to a
// param of the graph ($) and unbound (✕$).
import React, { useEffect, useLayoutEffect, useRef, useState } from 'react';
import { Handle, NodeResizer, Position } from '@xyflow/react';
import { GROUP, REROUTE, isPin, pinFile } from '../store/yaml.js';
import { useStore } from '../store/store.js';
import { getModels, modelKind } from '../api/index.js';

export const SpecContext = React.createContext(null);
export const SEED_CONTROLS = ['fixed', 'increment', 'decrement', 'randomize'];

function GrowingText(props) {
  const ref = useRef(null);
  useLayoutEffect(() => {
    const t = ref.current;
    if (!t) return;
    t.style.height = 'auto';
    t.style.height = `${Math.min(400, t.scrollHeight + 2)}px`;
  }, [props.value]);
  return <textarea ref={ref} rows={2} {...props} />;
}

// A pin badge: the value names its weights by content ({file, sha256}); the tooltip has the short hash.
export function PinBadge({ pin, testid }) {
  const short = pin.sha256.slice(0, 10).toLowerCase();
  return (
    <span className="pin" data-testid={testid} data-sha256={pin.sha256}
      role="img" aria-label="pinned" title={`pinned by content: sha256 ${short}${pin.sha256.length > 10 ? '…' : ''} (another file drops the pin)`}>
      <svg width="9" height="12" viewBox="0 0 9 12" aria-hidden="true">
        <circle cx="4.5" cy="3.5" r="3.2" fill="currentColor" />
        <path d="M4.5 6.5 V12" stroke="currentColor" strokeWidth="1.5" />
      </svg>
    </span>
  );
}

// A model file input: the file list of its kind. A pinned value ({file, sha256}) shows its file and a pin
// badge; picking another file sets the plain name, which drops the pin (as ComfyUI, which has no pins,
// would just switch files).
function ModelSelect({ input, common, value, onChange }) {
  const kind = modelKind(input);
  const [list, setList] = useState(null);
  const [err, setErr] = useState(null);
  const load = (refresh) => getModels(kind, refresh).then((r) => { setList(r.models); setErr(null); }).catch((e) => setErr(e.message));
  useEffect(() => { load(false); }, [kind]);
  const names = (list || []).map((m) => m.name);
  const pin = isPin(value) ? value : null;
  const name = pinFile(value);
  return (
    <span className="row">
      {pin && <PinBadge pin={pin} testid={`pin-${input.name}`} />}
      <select {...common} value={name ?? ''} onChange={(e) => onChange(e.target.value)} title={err || input.help || ''}>
        {!names.includes(name) && <option value={name ?? ''}>{name ? `${name} (not found)` : '— pick a model —'}</option>}
        {(list || []).map((m) => (
          <option key={m.name} value={m.name} disabled={!m.supported}>{m.name}{m.supported ? '' : ' (unsupported format)'}</option>
        ))}
      </select>
      <button className="nodrag small" data-testid={`refresh-${input.name}`} title={`refresh the ${kind} list`} onClick={() => load(true)}>↻</button>
    </span>
  );
}

function Widget({ input, value, onChange, nodeId, data }) {
  const common = { 'data-testid': `w-${input.name}`, className: 'nodrag nowheel', title: input.help || '' };
  const v = value === undefined ? input.default : value;
  const setNodeData = useStore((s) => s.setNodeData);
  if (typeof v === 'string' && v.startsWith('$'))
    return <input {...common} className="nodrag param-ref" value={v} onChange={(e) => onChange(e.target.value)} title="bound to a param of the graph" />;
  if (input.model_file) return <ModelSelect input={input} common={common} value={v} onChange={onChange} />;
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
          <select className="nodrag small" data-testid={`seedctl-${input.name}`} title="control after each queued run"
            value={(data.seedControl || {})[input.name] || 'fixed'}
            onChange={(e) => setNodeData(nodeId, { seedControl: { ...(data.seedControl || {}), [input.name]: e.target.value } })}>
            {SEED_CONTROLS.map((c) => <option key={c} value={c}>{c}</option>)}
          </select>
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
    return <GrowingText {...common} value={v ?? ''} onChange={(e) => onChange(e.target.value)} />;
  return <input {...common} value={v ?? ''} onChange={(e) => onChange(e.target.value)} />;
}

// Binds a widget to a param of the graph (its value becomes "$name", as in the YAML) or unbinds it (the
// widget gets the param's current default when it is a plain value, else the input's default).
function BindButton({ input, value, params, onChange }) {
  const [open, setOpen] = useState(false);
  const bound = typeof value === 'string' && value.startsWith('$') && !value.startsWith('$$');
  if (bound) {
    const d = params && params[value.slice(1)];
    const dv = isPin(d) ? d : d && typeof d === 'object' ? d.default : d;
    const back = dv !== undefined && (typeof dv !== 'object' || dv === null || isPin(dv)) ? dv : input.default;
    return (
      <button className="nodrag small bind" data-testid={`unbind-${input.name}`} title={`unbind from ${value}`}
        onClick={(e) => { e.preventDefault(); onChange(back); }}>✕$</button>
    );
  }
  const names = Object.keys(params || {});
  if (open)
    return (
      <select className="nodrag small" data-testid={`bind-select-${input.name}`} value="" autoFocus
        onBlur={() => setOpen(false)} onChange={(e) => { setOpen(false); if (e.target.value) onChange(`$${e.target.value}`); }}>
        <option value="">{names.length ? 'bind to param…' : 'no params: add one in the params panel'}</option>
        {names.map((k) => <option key={k} value={k}>${k}</option>)}
      </select>
    );
  return (
    <button className="nodrag small bind" data-testid={`bind-${input.name}`} title="bind to a param of the graph"
      onClick={(e) => { e.preventDefault(); setOpen(true); }}>$</button>
  );
}

function status(st) {
  switch (st.kind) {
    case 'running': return st.steps ? `running ${st.step}/${st.steps}` : 'running…';
    case 'cached': return 'cached';
    case 'done': return `done in ${st.ms < 10 ? st.ms.toFixed(1) : Math.round(st.ms)} ms`;
    case 'cancelled': return st.steps ? `cancelled at ${st.step}/${st.steps}` : 'cancelled';
    case 'error': return <span className="msg">{st.message}</span>;
    case 'queued': return 'waiting';
    default: return null;
  }
}

function RerouteNode({ id }) {
  return (
    <div className="reroute" data-testid={`node-${id}`}>
      <Handle type="target" position={Position.Left} id="in" className="h" />
      <Handle type="source" position={Position.Right} id="out" className="h" />
    </div>
  );
}

function GroupNode({ id, data, selected }) {
  const setNodeData = useStore((s) => s.setNodeData);
  return (
    <div className="group" data-testid={`node-${id}`} style={{ width: data.w || 400, height: data.h || 300 }}>
      <NodeResizer isVisible={selected} minWidth={120} minHeight={80}
        onResizeEnd={(_, p) => setNodeData(id, { w: Math.round(p.width), h: Math.round(p.height) })} />
      <input className="nodrag group-title" data-testid={`group-title-${id}`} value={data.title ?? 'Group'}
        onChange={(e) => setNodeData(id, { title: e.target.value })} />
    </div>
  );
}

export function FlowNode(props) {
  if (props.data.type === REROUTE) return <RerouteNode {...props} />;
  if (props.data.type === GROUP) return <GroupNode {...props} />;
  return <GraphNode {...props} />;
}

function GraphNode({ id, data, selected }) {
  const { specOf } = React.useContext(SpecContext);
  const setValue = useStore((s) => s.setValue);
  const setNodeData = useStore((s) => s.setNodeData);
  const st = useStore((s) => s.runStates[id]) || {};
  const isErr = useStore((s) => s.errorNode === id);
  const params = useStore((s) => s.doc.params);
  const spec = specOf(data.type);
  const mode = data.mode || 'normal';
  if (!spec)
    return <div className="node error" data-testid={`node-${id}`}><b>{id}</b>: unknown type {data.type}</div>;
  const asSocket = new Set(data.sockets || []);
  const sockets = spec.inputs.filter((i) => i.socket || asSocket.has(i.name));
  const widgets = spec.inputs.filter((i) => !i.socket && !i.hidden && !asSocket.has(i.name));
  const toggleSocket = (name) => {
    const s = new Set(asSocket);
    if (s.has(name)) s.delete(name); else s.add(name);
    setNodeData(id, { sockets: [...s] });
  };
  const cls = ['node', st.kind || '', isErr ? 'error' : '', mode !== 'normal' ? mode : '', selected ? 'sel' : ''].join(' ');
  return (
    <div className={cls} data-testid={`node-${id}`} data-state={st.kind || (isErr ? 'error' : 'idle')} data-mode={mode}>
      <div className="title">
        <button className="nodrag small collapse" data-testid={`collapse-${id}`} title="collapse (Alt+C)"
          onClick={() => setNodeData(id, { collapsed: !data.collapsed })}>{data.collapsed ? '▸' : '▾'}</button>
        <b>{id}</b> <span className="type">{spec.subgraph ? `⧉ ${data.type}` : data.type}</span>
        {mode !== 'normal' && <span className="badge" data-testid={`mode-${id}`}>{mode === 'bypass' ? 'bypassed' : 'muted'}</span>}
      </div>
      <div className="status" data-testid={`status-${id}`}>{status(st)}</div>
      {st.kind === 'running' && st.steps > 0 && (
        <div className="bar"><div style={{ width: `${(100 * st.step) / st.steps}%` }} /></div>
      )}
      <div className="io">
        <div className="ins">
          {sockets.map((i) => (
            <div key={i.name} className="sock">
              <Handle type="target" position={Position.Left} id={i.name} className={`h t-${i.type}`} />
              {!data.collapsed && <>{i.name} <i>{i.type}</i></>}
              {!data.collapsed && asSocket.has(i.name) && (
                <button className="nodrag small" data-testid={`to-widget-${i.name}`} title="back to a widget" onClick={() => toggleSocket(i.name)}>⊘</button>
              )}
            </div>
          ))}
        </div>
        <div className="outs">
          {spec.outputs.map((o) => (
            <div key={o.name} className="sock out">
              {!data.collapsed && <><i>{o.type}</i> {o.name}</>}
              <Handle type="source" position={Position.Right} id={o.name} className={`h t-${o.type}`} />
            </div>
          ))}
        </div>
      </div>
      {!data.collapsed && widgets.map((i) => (
        <label key={i.name} className={`widget ${i.multiline ? 'multi' : ''}`}>
          <span>{i.name}</span>
          <Widget input={i} value={data.values[i.name]} nodeId={id} data={data} onChange={(v) => setValue(id, i.name, v)} />
          <BindButton input={i} value={data.values[i.name]} params={params} onChange={(v) => setValue(id, i.name, v)} />
          <button className="nodrag small tosock" data-testid={`to-socket-${i.name}`} title="make this an input socket" onClick={(e) => { e.preventDefault(); toggleSocket(i.name); }}>⊙</button>
        </label>
      ))}
      {!data.collapsed && st.preview && <img className="preview" data-testid={`preview-${id}`} src={st.preview} alt="preview" />}
      {!data.collapsed && st.image && <img className="preview" data-testid={`image-${id}`} src={st.image} alt="output" />}
    </div>
  );
}

export const nodeTypes = { fr: FlowNode };
