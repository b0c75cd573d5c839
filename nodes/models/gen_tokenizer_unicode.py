# Generates tokenizer_unicode.h (letter/number classes, lower-case map and NFC tables for the CLIP tokenizer):
#   python3 nodes/models/gen_tokenizer_unicode.py > nodes/models/tokenizer_unicode.h
import unicodedata
def ranges(pred):
    r=[];s=None
    for c in range(0x110000):
        p=pred(c)
        if p and s is None: s=c
        if not p and s is not None: r.append((s,c-1)); s=None
    if s is not None: r.append((s,0x10ffff))
    return r
L=ranges(lambda c: unicodedata.category(chr(c)).startswith('L'))
N=ranges(lambda c: unicodedata.category(chr(c)).startswith('N'))
low=[(c,ord(chr(c).lower())) for c in range(0x110000) if len(chr(c).lower())==1 and chr(c).lower()!=chr(c)]
m=[]
for c,l in low:
    d=l-c
    if m:
        s,e,dd,st=m[-1]
        if dd==d:
            if s==e and c-e in (1,2): m[-1]=[s,c,d,c-e]; continue
            if s!=e and c-e==st: m[-1][1]=c; continue
    m.append([c,c,d,1])
o=[]
o.append("/* Unicode character classes for the CLIP tokenizer, generated from the Unicode Character Database")
o.append(" * %s (Python's unicodedata): letters = general category L*, numbers = N*, and the one-to-one" % unicodedata.unidata_version)
o.append(" * lower-case mappings of str.lower(), and the NFC tables (decompositions, combining classes, composites).")
o.append(" * Included by tokenizer.c only; regenerate rather than edit. */")
def emit(name, rs):
    o.append("static const uint32_t %s[][2] = {" % name)
    line="   "
    for s,e in rs:
        item=" {0x%X, 0x%X}," % (s,e)
        if len(line)+len(item)>108: o.append(line); line="   "
        line+=item
    o.append(line); o.append("};")
emit("fr__uni_letters", L)
emit("fr__uni_numbers", N)
o.append("/* {first, last, delta, stride}: c in [first, last] with (c - first) % stride == 0 lowers to c + delta. */")
o.append("static const int32_t fr__uni_lower[][4] = {")
line="   "
for s,e,d,st in m:
    item=" {0x%X, 0x%X, %d, %d}," % (s,e,d,st)
    if len(line)+len(item)>108: o.append(line); line="   "
    line+=item
o.append(line); o.append("};")
# NFC (transformers' CLIPTokenizer normalizes with NFC first): full canonical decompositions (Hangul
# syllables are algorithmic, not listed), canonical combining classes, and the primary composites (pairs of
# a two-character canonical decomposition whose composite NFC keeps: no exclusions, no singletons).
def full(c):
    d=unicodedata.decomposition(chr(c))
    if not d or d.startswith('<'): return [c]
    r=[]
    for h in d.split(): r+=full(int(h,16))
    return r
dec=[];comp=[];ccc=[]
for c in range(0x110000):
    if 0xAC00<=c<=0xD7A3: continue
    d=unicodedata.decomposition(chr(c))
    if d and not d.startswith('<'):
        f=full(c)
        dec.append([c]+f+[0]*(4-len(f)))
        p=[int(h,16) for h in d.split()]
        if len(p)==2 and unicodedata.normalize('NFC',chr(c))==chr(c): comp.append((p[0],p[1],c))
    k=unicodedata.combining(chr(c))
    if k:
        if ccc and ccc[-1][1]==c-1 and ccc[-1][2]==k: ccc[-1][1]=c
        else: ccc.append([c,c,k])
comp.sort()
def table(decl, rows, fmt):
    o.append(decl)
    line="   "
    for r in rows:
        item=" "+fmt(r)+","
        if len(line)+len(item)>108: o.append(line); line="   "
        line+=item
    o.append(line); o.append("};")
o.append("/* {c, d0, d1, d2, d3}: c's full canonical decomposition (0-padded), by c. */")
table("static const uint32_t fr__uni_decomp[][5] = {", dec, lambda r: "{0x%X, 0x%X, 0x%X, 0x%X, 0x%X}" % tuple(r))
o.append("/* {first, last, ccc}: canonical combining classes other than 0. */")
table("static const uint32_t fr__uni_ccc[][3] = {", ccc, lambda r: "{0x%X, 0x%X, %d}" % tuple(r))
o.append("/* {a, b, c}: a followed by b composes to c (primary composites), sorted by (a, b). */")
table("static const uint32_t fr__uni_comp[][3] = {", comp, lambda r: "{0x%X, 0x%X, 0x%X}" % r)
print("\n".join(o))
