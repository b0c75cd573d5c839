// The add-node search (double-click on the canvas, or a link dropped on empty canvas): fuzzy over the
// type name, ComfyUI's names for it ("KSampler" finds Sampler), category and help (fuse.js), listed with
// cmdk (arrows + Enter, Escape closes). With a type filter only nodes that can take (or give) that type.
import React, { useMemo, useState } from 'react';
import { Command } from 'cmdk';
import Fuse from 'fuse.js';

export function accepts(spec, filter) {
  if (!filter) return true;
  const list = filter.dir === 'in' ? spec.inputs : spec.outputs;
  return list.some((i) => (filter.dir === 'in' ? i.socket : true) && (i.type === filter.type || i.type === '*'));
}

// commands: editor actions listed with the nodes ({id, name, help, run}; Ctrl+K opens the search), first
// when their name matches what is typed.
export function SearchBox({ at, filter, specs, commands = [], onPick, onClose }) {
  const [q, setQ] = useState('');
  const cmds = useMemo(() => {
    if (!q) return commands;
    return new Fuse(commands, { keys: ['name', 'help'], threshold: 0.4, ignoreLocation: true }).search(q).map((r) => r.item);
  }, [q, commands]);
  const pool = useMemo(() => specs.filter((s) => accepts(s, filter)), [specs, filter]);
  const fuse = useMemo(() => new Fuse(pool, {
    keys: [{ name: 'name', weight: 3 }, { name: 'comfy', weight: 3 }, { name: 'category', weight: 1 }, { name: 'help', weight: 0.5 }],
    threshold: 0.4, ignoreLocation: true,
  }), [pool]);
  const found = q ? fuse.search(q).map((r) => r.item) : pool;
  return (
    <div className="search" style={{ left: at.x, top: at.y }} data-testid="search" onMouseDown={(e) => e.stopPropagation()}>
      <Command shouldFilter={false} label="add a node" onKeyDown={(e) => { if (e.key === 'Escape') onClose(); }}>
        <Command.Input autoFocus data-testid="search-input" value={q} onValueChange={setQ}
          placeholder={filter ? `a node that ${filter.dir === 'in' ? 'takes' : 'gives'} ${filter.type}…` : 'search nodes (name, ComfyUI name, category) and commands…'} />
        <Command.List>
          <Command.Empty>no node matches</Command.Empty>
          {cmds.map((c) => (
            <Command.Item key={`cmd-${c.id}`} value={`cmd-${c.id}`} data-testid={`cmd-${c.id}`} onSelect={() => { onClose(); c.run(); }}>
              <span>{c.name}</span>
              <small>{c.help}</small>
            </Command.Item>
          ))}
          {found.slice(0, 40).map((s) => (
            <Command.Item key={s.name} value={s.name} data-testid={`search-${s.name}`} onSelect={() => onPick(s.name)}>
              <span>{s.name}</span>
              {s.comfy && s.comfy.length > 0 && <small className="alias">{s.comfy.join(', ')}</small>}
              <small>{s.category}</small>
            </Command.Item>
          ))}
        </Command.List>
      </Command>
    </div>
  );
}

// Right-click on the canvas: categories, each opening its node types.
export function AddMenu({ at, specs, onPick, onClose }) {
  const [cat, setCat] = useState(null);
  const cats = useMemo(() => {
    const m = {};
    for (const s of specs) (m[s.category || 'other'] ||= []).push(s);
    return Object.entries(m).sort(([a], [b]) => a.localeCompare(b));
  }, [specs]);
  return (
    <div className="menu" style={{ left: at.x, top: at.y }} data-testid="add-menu" onMouseDown={(e) => e.stopPropagation()} onContextMenu={(e) => { e.preventDefault(); onClose(); }}>
      <div className="menu-title">Add node</div>
      {cats.map(([c, list]) => (
        <div key={c} className={`menu-item ${cat === c ? 'open' : ''}`} data-testid={`menu-cat-${c}`} onMouseEnter={() => setCat(c)} onClick={() => setCat(c)}>
          {c} ▸
          {cat === c && (
            <div className="submenu">
              {list.map((s) => (
                <div key={s.name} className="menu-item" data-testid={`menu-${s.name}`} title={s.help}
                  onClick={(e) => { e.stopPropagation(); onPick(s.name); }}>{s.name}</div>
              ))}
            </div>
          )}
        </div>
      ))}
    </div>
  );
}
