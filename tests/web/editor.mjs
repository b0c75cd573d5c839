// Browser test of the editor (playwright-core driving Debian's chromium; nothing downloads a browser).
//   node tests/web/editor.mjs URL SHOTS_DIR
// Opens the editor served by a running `flowrun serve`, loads image-demo.yaml, runs it, changes a widget,
// runs again (the upstream nodes are cached), and saves the graph as editor-saved.yaml. Screenshots go
// to SHOTS_DIR. Exits non-zero on the first failed step.
import { createRequire } from 'node:module';
import path from 'node:path';

const require = createRequire(import.meta.url);
const [url, shots] = process.argv.slice(2);
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
  await page.getByTestId('node-overlay').getByTestId('w-blend_factor').fill('0.5');
  await page.getByTestId('run').click();
  await page.locator('[data-testid=run-state][data-state=done]').waitFor({ timeout: 60000 });
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
  if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  ok = true;
  console.log('editor test passed');
} catch (e) {
  console.error(`FAIL: ${e.message}`);
  await page.screenshot({ path: path.join(shots, 'editor-failure.png') }).catch(() => {});
} finally {
  await browser.close();
}
process.exit(ok ? 0 : 1);
