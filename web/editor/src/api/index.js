// The server's JSON API (docs/protocol.md), one function per route; every call throws an Error with the
// server's whole message (and the HTTP status as .status) on a non-2xx answer.
export async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body),
  });
  const j = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (!r.ok) throw Object.assign(new Error(j.error || `HTTP ${r.status}`), { status: r.status });
  return j;
}

export const getSchema = () => api('api/schema');
export const getGraphs = () => api('api/graphs');
export const getGraph = (p) => api(`api/graph?path=${encodeURIComponent(p)}`);
// force: write a graph that does not load yet (it must still be YAML; docs/protocol.md).
export const saveGraph = (path, yaml, force = false) => api('api/graph', force ? { path, yaml, force: true } : { path, yaml });
export const queueRun = (body) => api('api/run', body);
export const cancelRun = (id) => api('api/cancel', { id });
export const moveRun = (id, before) => api('api/queue/move', { id, before });
export const getRuns = () => api('api/runs');
export const getRun = (id) => api(`api/run?id=${id}`);
export const importComfy = (json, source) => api('api/import/comfy', { json, source });
// The graph's YAML with its model files pinned by content ({file, sha256}) and what happened to each model
// input: {yaml, pinned, inputs: [{node, input, param, file, state, sha256}]} (docs/protocol.md).
export const pinModels = (yaml, path) => api('api/pin', path ? { yaml, path } : { yaml });
export const outputUrl = (file, run, temp) => `api/output?${temp ? 'temp=1&' : ''}file=${encodeURIComponent(file)}&r=${run}`;

// Model lists by kind, cached until refreshed (refresh: true asks the server again, which re-lists).
const models = new Map();
export function getModels(kind, refresh) {
  if (refresh || !models.has(kind)) models.set(kind, api(`api/models?kind=${encodeURIComponent(kind)}`).catch((e) => { models.delete(kind); throw e; }));
  return models.get(kind);
}

// The ComfyUI models/ subfolder an input's files live in: the schema's model_folder when it says, else
// ComfyUI's input names.
const KIND_BY_NAME = {
  ckpt_name: 'checkpoints', lora_name: 'loras', vae_name: 'vae', control_net_name: 'controlnet',
  model_name: 'upscale_models', embedding: 'embeddings', unet_name: 'unet', clip_name: 'clip',
};
export const modelKind = (input) => input.model_folder || KIND_BY_NAME[input.name] || (input.model_file ? 'checkpoints' : null);
