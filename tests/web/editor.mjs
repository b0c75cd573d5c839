// Browser test of the editor (playwright-core driving Debian's chromium; nothing downloads a browser).
//   node tests/web/editor.mjs URL SHOTS_DIR [image|sampler]
// Opens the editor served by a running `flowrun serve`. Screenshots go to SHOTS_DIR. Exits non-zero on
// the first failed step.
//   image (default; needs no models): loads image-demo.yaml, runs it, changes a widget, runs again (the
//     upstream nodes are cached), saves the graph as editor-saved.yaml, restores a workflow from a dropped
//     PNG, adds and deletes a node, and checks that only type-compatible connections can be drawn.
//   sampler (the server needs --models with the tiny SD1.5 model): runs tiny-demo.yaml and watches the
//     Sampler's step progress and preview while it runs, then the output image; a new seed re-runs with
//     the TextEncodes cached; a run cancelled mid-sampling shows as cancelled.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const [url, shots, scenario = 'image'] = process.argv.slice(2);
const { chromium } = require(require.resolve('playwright-core', { paths: [process.env.FR_EDITOR_MODULES || '.'] }));

const step = (m) => console.log(`step: ${m}`);
const browser = await chromium.launch({
  executablePath: process.env.FR_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'],
});
let ok = false;
const page = await browser.newPage({ viewport: { width: 1500, height: 900 } });
const errors = [];
page.on('pageerror', (e) => errors.push(String(e)));
try {
  page.setDefaultTimeout(30000);
  step('open the editor');
  await page.goto(url);
  await page.getByTestId('palette-ImageBlur').waitFor();
  if (scenario === 'sampler') await samplerScenario();
  else if (scenario === 'image') await imageScenario();
  else throw new Error(`unknown scenario ${scenario}`);
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  ok = true;
  console.log(`editor test (${scenario}) passed`);
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  await page.screenshot({ path: path.join(shots, `editor-failure-${scenario}.png`) }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);

async function imageScenario() {
  step('palette search filters the node types');
  await page.getByTestId('palette-search').fill('canny');
  await page.getByTestId('palette-Canny').waitFor();
  if (await page.getByTestId('palette-ImageBlur').count()) throw new Error('search did not filter');
  await page.getByTestId('palette-search').fill('');

  step('load graphs/image-demo.yaml');
  await page.getByTestId('graph-select').selectOption('image-demo.yaml');
  for (const id of ['pattern', 'edges', 'overlay', 'save']) await page.getByTestId(`node-${id}`).waitFor();

  step('a smaller pattern (a param) and run');
  await page.getByTestId('param-size').fill('256');
  await page.getByTestId('run').click();
  await page.locator('[data-testid=run-state][data-state=done]').waitFor({ timeout: 60000 });
  await page.locator('[data-testid=node-save][data-state=done]').waitFor();
  await page.getByTestId('status-save').filter({ hasText: /done in/ }).waitFor();
  const img = page.getByTestId('output-image').first();
  await img.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid=output-image]');
    return i && i.complete && i.naturalWidth === 256;
  });
  await page.screenshot({ path: path.join(shots, 'editor-first-run.png') });

  step('change a widget (blend_factor) and run again: pattern and edges come from the cache');
  // The answer to this POST is held back until the run has finished, so every event of the run reaches
  // the page before its id does (what a loaded machine does to a fast, mostly cached run). The editor
  // must still end on 'done', not on the 'queued' it learns last.
  await page.evaluate(() => {
    const plain = window.fetch;
    window.fetch = async (what, init) => {
      const r = await plain(what, init);
      if (what !== 'api/run') return r;
      window.fetch = plain;
      const { id } = await r.clone().json();
      for (let i = 0; i < 600; i++) {
        const { runs } = await (await plain('api/runs')).json();
        const run = runs.find((x) => x.id === id);
        if (!run || run.state === 'done') break;
        await new Promise((res) => setTimeout(res, 100));
      }
      await new Promise((res) => setTimeout(res, 500)); // its last events are on the websocket by now
      return r;
    };
  });
  const firstRun = await page.getByTestId('run-state').textContent();
  await page.getByTestId('node-overlay').getByTestId('w-blend_factor').fill('0.5');
  await page.getByTestId('run').click();
  await page.locator('[data-testid=run-state][data-state=done]').filter({ hasNotText: firstRun }).waitFor({ timeout: 60000 });
  await page.locator('[data-testid=node-pattern][data-state=cached]').waitFor();
  await page.locator('[data-testid=node-edges][data-state=cached]').waitFor();
  await page.locator('[data-testid=node-overlay][data-state=done]').waitFor();
  await page.getByTestId('output-image').first().waitFor();
  await page.screenshot({ path: path.join(shots, 'editor-incremental.png') });

  step('save as editor-saved.yaml');
  await page.getByTestId('path').fill('editor-saved.yaml');
  await page.getByTestId('save').click();
  await page.getByTestId('message').filter({ hasText: 'saved editor-saved.yaml' }).waitFor();

  step('dropping a PNG written by flowrun restores its workflow');
  await page.evaluate(async () => {
    const src = document.querySelector('[data-testid=output-image]').getAttribute('src');
    const bytes = await (await fetch(src)).arrayBuffer();
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    document.querySelector('.app').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  });
  await page.getByTestId('message').filter({ hasText: 'restored the workflow of dropped.png' }).waitFor();
  await page.getByTestId('node-overlay').waitFor();
  if ((await page.getByTestId('path').inputValue()) !== 'dropped.yaml') throw new Error('drop did not load the workflow');

  step('a node can be added from the palette and deleted');
  await page.getByTestId('palette-search').fill('TestPattern');
  await page.getByTestId('palette-TestPattern').click();
  await page.getByTestId('node-testpattern').waitFor();
  await page.getByTestId('node-testpattern').click({ position: { x: 20, y: 8 } });
  await page.keyboard.press('Delete');
  await page.getByTestId('node-testpattern').waitFor({ state: 'detached' });

  step('the LoRA nodes are in the palette; LoraLoader comes with its widgets and defaults');
  await page.getByTestId('palette-search').fill('lora');
  await page.getByTestId('palette-LoraLoaderModelOnly').waitFor();
  await page.getByTestId('palette-LoraLoader').click();
  const lora = page.getByTestId('node-loraloader');
  await lora.waitFor();
  for (const w of ['lora_name', 'strength_model', 'strength_clip']) await lora.getByTestId(`w-${w}`).waitFor();
  if ((await lora.getByTestId('w-strength_clip').inputValue()) !== '1') throw new Error('strength_clip default');
  await lora.click({ position: { x: 20, y: 8 } });
  await page.keyboard.press('Delete');
  await lora.waitFor({ state: 'detached' });
  await page.getByTestId('palette-search').fill('');

  step('connections: an IMAGE output onto a LATENT input is refused, LATENT onto LATENT is drawn');
  await connectionChecks();
}

// Drags from one node's output socket to another's input socket, as a user does with the mouse.
async function drag(src, out, dst, inp) {
  const a = page.locator(`.react-flow__handle.source[data-nodeid="${src}"][data-handleid="${out}"]`);
  const b = page.locator(`.react-flow__handle.target[data-nodeid="${dst}"][data-handleid="${inp}"]`);
  const ba = await a.boundingBox();
  const bb = await b.boundingBox();
  if (!ba || !bb) throw new Error(`socket ${src}.${out} or ${dst}.${inp} is not on screen`);
  await page.mouse.move(ba.x + ba.width / 2, ba.y + ba.height / 2);
  await page.mouse.down();
  await page.mouse.move((ba.x + bb.x) / 2, (ba.y + bb.y) / 2, { steps: 5 });
  await page.mouse.move(bb.x + bb.width / 2, bb.y + bb.height / 2, { steps: 5 });
  await page.mouse.up();
  await page.waitForTimeout(200);
}

function edgeIds() {
  return page.locator('.react-flow__edge').evaluateAll((es) => es.map((e) => e.getAttribute('data-testid')).sort());
}

// On tiny-demo.yaml (loading it needs no model): decode's IMAGE output dropped on the Sampler's LATENT
// input must create no edge and keep the Sampler's existing latent link; a LATENT output on the unlinked
// LATENT input `noise` must create one (so the refusal is not just a drag that missed).
async function connectionChecks() {
  await page.getByTestId('graph-select').selectOption('tiny-demo.yaml');
  for (const id of ['empty', 'sample', 'decode']) await page.getByTestId(`node-${id}`).waitFor();
  await page.waitForTimeout(300); // fitView
  const before = await edgeIds();
  if (!before.includes('rf__edge-empty.latent->sample.latent')) throw new Error(`unexpected edges: ${before}`);
  await drag('decode', 'image', 'sample', 'latent');
  const after = await edgeIds();
  if (JSON.stringify(after) !== JSON.stringify(before))
    throw new Error(`an IMAGE -> LATENT connection changed the edges: ${before} -> ${after}`);
  await drag('empty', 'latent', 'sample', 'noise');
  const added = await edgeIds();
  if (!added.includes('rf__edge-empty.latent->sample.noise') || added.length !== before.length + 1)
    throw new Error(`a LATENT -> LATENT connection was not drawn: ${added}`);
  await page.screenshot({ path: path.join(shots, 'editor-connections.png') });
}

// Every state the Sampler's node and the preview go through, as rendered (a MutationObserver sees each
// commit, however short): its status texts, and whether a decoded preview was on the node while the
// status said running.
async function watchSampler() {
  await page.evaluate(() => {
    const seen = { status: [], previewWhileRunning: false };
    window.__seen = seen;
    const look = () => {
      const st = document.querySelector('[data-testid=status-sample]');
      const t = st ? st.textContent : '';
      if (t && seen.status[seen.status.length - 1] !== t) seen.status.push(t);
      const img = document.querySelector('[data-testid=preview-sample]');
      const side = document.querySelector('[data-testid=preview]');
      if (/^running \d+\/\d+$/.test(t) && img && side && img.src.startsWith('data:image/png;base64,'))
        seen.previewWhileRunning = true;
    };
    new MutationObserver(look).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
  });
}

async function samplerScenario() {
  step('load graphs/tiny-demo.yaml');
  await page.getByTestId('graph-select').selectOption('tiny-demo.yaml');
  for (const id of ['ckpt', 'positive', 'negative', 'empty', 'sample', 'decode', 'save']) await page.getByTestId(`node-${id}`).waitFor();
  await watchSampler();

  const steps = 40; // a run of a few seconds, to look at it while it runs
  step(`run with ${steps} steps: the Sampler shows i/${steps} and a preview while it runs`);
  await page.getByTestId('param-steps').fill(String(steps));
  await page.getByTestId('run').click();
  const running = new RegExp(`^running \\d+/${steps}$`);
  await page.getByTestId('status-sample').filter({ hasText: running }).waitFor({ timeout: 60000 });
  const preview = page.getByTestId('preview-sample');
  await preview.waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid=preview-sample]');
    return i && i.complete && i.naturalWidth > 0;
  });
  const midState = await page.getByTestId('node-sample').getAttribute('data-state');
  const midText = await page.getByTestId('status-sample').textContent();
  await page.screenshot({ path: path.join(shots, 'editor-sampler-preview.png') });
  console.log(`  screenshot taken with the Sampler ${midState}: "${midText}"`);

  step('the output image appears at the end');
  await page.locator('[data-testid=node-save][data-state=done]').waitFor({ timeout: 120000 });
  await page.locator('[data-testid=run-state][data-state=done]').waitFor({ timeout: 60000 });
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid=output-image]');
    return i && i.complete && i.naturalWidth === 128;
  });
  await page.getByTestId('status-sample').filter({ hasText: /done in/ }).waitFor();
  const seen = await page.evaluate(() => window.__seen);
  const mid = seen.status.filter((t) => running.test(t)).map((t) => +t.match(/(\d+)\//)[1]);
  console.log(`  Sampler states seen: ${seen.status.length} (${mid.length} with steps, ${mid[0]}..${mid[mid.length - 1]})`);
  if (!mid.some((k) => k > 0 && k < steps)) throw new Error(`no intermediate step shown: ${seen.status.join(' | ')}`);
  for (let k = 1; k < mid.length; k++) if (mid[k] < mid[k - 1]) throw new Error(`steps went backwards: ${mid}`);
  if (!seen.previewWhileRunning) throw new Error('no preview image was shown while the Sampler was running');
  await page.screenshot({ path: path.join(shots, 'editor-sampler-done.png') });

  step('a new seed runs again: the TextEncodes come from the cache, the Sampler runs');
  await page.getByTestId('param-seed').fill('2');
  await page.getByTestId('run').click();
  await page.locator('[data-testid=node-save][data-state=done]').waitFor({ timeout: 120000 });
  for (const id of ['positive', 'negative']) {
    await page.locator(`[data-testid=node-${id}][data-state=cached]`).waitFor();
    await page.getByTestId(`status-${id}`).filter({ hasText: 'cached' }).waitFor();
  }
  await page.locator('[data-testid=node-sample][data-state=done]').waitFor();
  await page.waitForFunction(() => {
    const i = document.querySelector('[data-testid=output-image]');
    return i && i.complete && i.naturalWidth === 128;
  });
  await page.getByTestId('message').filter({ hasText: /: ok, \d+ ran, [1-9]\d* cached/ }).waitFor();
  await page.screenshot({ path: path.join(shots, 'editor-sampler-cached.png') });

  step('cancel while the Sampler runs: the run and the Sampler show cancelled');
  await page.getByTestId('param-seed').fill('3');
  await page.getByTestId('run').click();
  await page.getByTestId('status-sample').filter({ hasText: running }).waitFor({ timeout: 60000 });
  await page.getByTestId('cancel').click();
  await page.locator('[data-testid=run-state][data-state=cancelled]').waitFor({ timeout: 60000 });
  await page.locator('[data-testid=node-sample][data-state=cancelled]').waitFor();
  await page.getByTestId('status-sample').filter({ hasText: new RegExp(`^cancelled at \\d+/${steps}$`) }).waitFor();
  if (await page.locator('[data-testid=node-save][data-state=done]').count()) throw new Error('a cancelled run saved an image');
  await page.screenshot({ path: path.join(shots, 'editor-sampler-cancelled.png') });
}
