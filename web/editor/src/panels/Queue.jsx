// The right-hand panels: the queue (pending runs with reorder and cancel, the running one with progress
// and ETA), the history the server keeps (finished runs, each reopened with its graph and params), and
// the gallery of output pictures with a full-size viewer.
import React, { useEffect, useState } from 'react';
import { outputUrl } from '../api/index.js';

const fmtS = (s) => (s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${s.toFixed(s < 10 ? 1 : 0)}s`);

export function QueuePanel({ runs, progress, onCancel, onMove, onOpen }) {
  const pending = runs.filter((r) => r.state === 'queued');
  const running = runs.filter((r) => r.state === 'running');
  const finished = runs.filter((r) => r.state !== 'queued' && r.state !== 'running').slice().reverse();
  return (
    <div className="queue" data-testid="queue">
      <h4>queue</h4>
      {running.map((r) => {
        const p = progress && progress.run === r.id ? progress : null;
        const eta = p && p.step > 0 ? ((performance.now() - p.t0) / 1000 / p.step) * (p.steps - p.step) : null;
        return (
          <div key={r.id} className="qrow running" data-testid={`queue-running-${r.id}`}>
            <span>#{r.id} {r.path || 'unsaved'}</span>
            <span data-testid="queue-progress">{p ? `${p.node} ${p.step}/${p.steps}${eta !== null ? `, ETA ${fmtS(eta)}` : ''}` : 'running'}</span>
            {p && <div className="bar"><div style={{ width: `${(100 * p.step) / p.steps}%` }} /></div>}
            <button className="small" data-testid={`queue-cancel-${r.id}`} onClick={() => onCancel(r.id)}>✕</button>
          </div>
        );
      })}
      {pending.map((r, k) => (
        <div key={r.id} className="qrow" data-testid={`queue-pending-${r.id}`}>
          <span>#{r.id} {r.path || 'unsaved'} <i>waiting</i></span>
          <button className="small" data-testid={`queue-up-${r.id}`} disabled={k === 0} title="run earlier" onClick={() => onMove(r.id, pending[k - 1].id)}>↑</button>
          <button className="small" data-testid={`queue-cancel-${r.id}`} title="cancel" onClick={() => onCancel(r.id)}>✕</button>
        </div>
      ))}
      {!pending.length && !running.length && <div className="empty">nothing queued</div>}
      <h4>history</h4>
      {finished.map((r) => (
        <div key={r.id} className={`qrow ${r.state}`} data-testid={`history-${r.id}`} data-state={r.state} title={r.error || ''}>
          <span>#{r.id} {r.path || 'unsaved'} <i>{r.state}</i>{r.state === 'done' && ` ${Math.round(r.ms)} ms`}</span>
          <button className="small" data-testid={`history-open-${r.id}`} title="open this run's graph and params" onClick={() => onOpen(r.id)}>open</button>
        </div>
      ))}
    </div>
  );
}

export function Gallery({ runs }) {
  const [view, setView] = useState(null);
  const pics = [];
  for (const r of runs.slice().reverse())
    for (const f of r.outputs || []) if (/\.png$/i.test(f)) pics.push({ src: outputUrl(f, r.id), file: f, run: r.id });
  useEffect(() => {
    if (!view) return undefined;
    const k = (e) => { if (e.key === 'Escape') setView(null); };
    window.addEventListener('keydown', k);
    return () => window.removeEventListener('keydown', k);
  }, [view]);
  return (
    <div className="gallery" data-testid="gallery">
      <h4>gallery</h4>
      <div className="thumbs">
        {pics.map((p) => (
          <img key={p.src} src={p.src} alt={p.file} title={`${p.file} (run ${p.run})`} data-testid="output-image" onClick={() => setView(p)} />
        ))}
      </div>
      {view && (
        <div className="viewer" data-testid="viewer" onClick={() => setView(null)}>
          <img src={view.src} alt={view.file} data-testid="viewer-image" />
          <div className="caption">{view.file} — run {view.run} (click or Escape to close)</div>
        </div>
      )}
    </div>
  );
}

export function Help({ onClose }) {
  const keys = [
    ['double-click canvas', 'search and add a node'], ['right-click canvas', 'add-node menu by category'],
    ['drag a link onto empty canvas', 'add a node that takes it, connected'], ['Ctrl+Enter', 'queue the graph'],
    ['Ctrl+Z / Ctrl+Shift+Z (Ctrl+Y)', 'undo / redo'], ['Ctrl+C / Ctrl+V', 'copy / paste (also into another tab)'],
    ['Ctrl+D', 'duplicate the selection'], ['Ctrl+B', 'bypass the selection'], ['Ctrl+M', 'mute the selection'],
    ['Alt+C', 'collapse the selection'], ['Shift+drag, Ctrl+click', 'select several nodes'],
    ['Delete / Backspace', 'delete the selection'], ['Ctrl+S', 'save'], ['Ctrl+K', 'search nodes and commands (Pin models)'], ['?', 'this help'], ['Escape', 'close a box'],
  ];
  return (
    <div className="overlay" data-testid="help" onClick={onClose}>
      <div className="helpbox" onClick={(e) => e.stopPropagation()}>
        <h3>Keyboard and mouse</h3>
        <table><tbody>{keys.map(([k, v]) => <tr key={k}><td><kbd>{k}</kbd></td><td>{v}</td></tr>)}</tbody></table>
        <button onClick={onClose}>close</button>
      </div>
    </div>
  );
}
