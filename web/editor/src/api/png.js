// Reads a text chunk (tEXt, zTXt or iTXt) from a PNG in the browser: flowrun's SaveImage stores the
// workflow YAML under "flowrun-workflow" and the params under "flowrun-params" (iTXt, UTF-8).
async function inflate(bytes) {
  const ds = new DecompressionStream('deflate');
  const out = new Response(new Blob([bytes]).stream().pipeThrough(ds));
  return new Uint8Array(await out.arrayBuffer());
}

export async function pngText(buffer, key) {
  const b = new Uint8Array(buffer);
  const sig = [137, 80, 78, 71, 13, 10, 26, 10];
  if (b.length < 8 || sig.some((v, i) => b[i] !== v)) return null;
  const dv = new DataView(buffer);
  const dec = new TextDecoder();
  const latin1 = new TextDecoder('latin1');
  for (let p = 8; p + 12 <= b.length; ) {
    const len = dv.getUint32(p);
    const type = latin1.decode(b.subarray(p + 4, p + 8));
    const data = b.subarray(p + 8, p + 8 + len);
    p += 12 + len;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'iTXt' && type !== 'zTXt') continue;
    const z = data.indexOf(0);
    if (z < 0 || latin1.decode(data.subarray(0, z)) !== key) continue;
    if (type === 'tEXt') return latin1.decode(data.subarray(z + 1));
    if (type === 'zTXt') return latin1.decode(await inflate(data.subarray(z + 2)));
    // iTXt: keyword \0 compressed method language \0 translated \0 text
    const compressed = data[z + 1] === 1;
    let q = data.indexOf(0, z + 3); // end of language tag
    q = data.indexOf(0, q + 1); // end of translated keyword
    const text = data.subarray(q + 1);
    return dec.decode(compressed ? await inflate(text) : text);
  }
  return null;
}
